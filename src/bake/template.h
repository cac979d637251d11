/* The bake template: the native JSON format (docs/baking.md, "Template
 * format") read strictly into typed structs.
 *
 * bake_template_parse() checks structure only: unknown keys (keys starting
 * with `_` are comments and ignored), wrong types, missing required fields,
 * durations, octal modes, uid:gid owners, per-step rules.  Every refusal is
 * -EINVAL with one message that starts with the place in the template, for
 * example `steps[2].destinaton: unknown key`.  Strings keep their `{{ }}`
 * templates; bake_template_resolve_variables() and bake_template_expand()
 * (with a struct bake_interp, interp.h) replace them in place.
 *
 * A template from Packer's legacy JSON is read by packer.h into the same
 * struct.  The driver (`kiln bake`, not written yet) is the only intended
 * user; nothing here touches the registry, the network or a VM.
 */
#ifndef KILN_BAKE_TEMPLATE_H
#define KILN_BAKE_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"

#define BAKE_TEMPLATE_MAX_STEPS 256
#define BAKE_TEMPLATE_MAX_DURATION (366ULL * 24 * 3600) /* seconds */

struct bake_interp;
struct json_value;

enum bake_step_type {
    BAKE_STEP_FILE,
    BAKE_STEP_SHELL,
    BAKE_STEP_SYSTEMD,
    BAKE_STEP_DELETE,
    BAKE_STEP_SYMLINK,
    BAKE_STEP_APPEND_LINE,
    BAKE_STEP_MKDIR,
    BAKE_STEP_REBOOT,
};

enum bake_phase { BAKE_PHASE_BUILD, BAKE_PHASE_VALIDATE };
enum bake_executor { BAKE_EXEC_AUTO, BAKE_EXEC_OFFLINE, BAKE_EXEC_AGENT };
enum bake_on_error { BAKE_ON_ERROR_CLEANUP, BAKE_ON_ERROR_KEEP, BAKE_ON_ERROR_ABORT };

struct bake_strv {
    size_t n;
    char **items;
};

/* A string map in template order (JSON forbids duplicate keys). */
struct bake_kv {
    char *key;
    char *value;
};
struct bake_kvs {
    size_t n;
    struct bake_kv *items;
};

struct bake_variable {
    char *name;
    char *default_value; /* NULL: no default */
    bool required, sensitive;
    char *env; /* NULL, or the environment variable that supplies the value */
};

/* One EC2 DescribeImages filter: a name and its values. */
struct bake_filter {
    char *name;
    struct bake_strv values;
};

struct bake_source {
    char *image_id; /* exactly one of image_id and has_filter */
    bool has_filter;
    struct bake_strv owners;
    size_t n_filters;
    struct bake_filter *filters;
    bool most_recent;
};

struct bake_step {
    char *place; /* "steps[2]" or "tests.steps[0]": for messages */
    char *name;  /* defaults to "<index>-<type>" */
    enum bake_step_type type;
    enum bake_phase phase;
    enum bake_executor executor;
    uint64_t timeout_s; /* 0: the build's timeout */
    unsigned max_retries;
    bool cache;          /* default true */
    uint64_t cache_ttl_s; /* 0: no expiry */

    /* file, mkdir, delete, append_line: `destination` or `path` */
    char *source, *content, *destination, *path;
    int mode;           /* -1 unset, else 0..07777 */
    int64_t uid, gid;   /* -1 unset */
    bool mkdirs;        /* file: create missing parents (default true) */
    bool recursive;     /* delete */
    char *target, *link; /* symlink */
    char *line;          /* append_line */

    /* shell */
    struct bake_strv inline_cmds;
    char *script;
    struct bake_strv scripts;
    struct bake_kvs env;

    /* systemd */
    struct bake_strv enable, disable, mask;
};

struct bake_template {
    char *schema; /* "kiln-bake/1" */
    char *name, *description, *version;
    size_t n_variables;
    struct bake_variable *variables;
    struct bake_source source;

    struct {
        char *instance_type;
        uint64_t root_volume_gib; /* 0: the source's size */
        enum bake_executor executor;
        uint64_t timeout_s;
        enum bake_on_error on_error;
        bool cache;
    } build;

    size_t n_steps;
    struct bake_step *steps;

    bool has_tests;
    struct {
        char *instance_type;
        uint64_t timeout_s;
        size_t n_steps;
        struct bake_step *steps;
    } tests;

    struct {
        char *name, *description, *version;
        struct bake_kvs tags, snapshot_tags;
    } output;

    struct {
        struct bake_strv regions;
        struct bake_strv user_ids, groups;
        uint64_t deprecate_after_s; /* 0: never */
    } distribution;

    struct {
        char *output; /* NULL: no manifest */
        struct bake_kvs custom_data;
        bool strip_path;
    } manifest;

    /* Warnings from an imported (Packer) template, for the user. */
    struct bake_strv warnings;
};

/* Parse a native template from text[0..len).  Returns 0 and a template to
 * free with bake_template_free(), or -EINVAL with a message naming the
 * place (`steps[2].destinaton: unknown key`). */
int bake_template_parse(const char *text, size_t len, struct bake_template **ret);

/* Read `path` (at most JSON_MAX_INPUT bytes) and parse it: a native
 * template, or a Packer legacy JSON template (detected by a `builders`
 * key, packer.h).  Messages start with the file's path.  Returns 0, -EINVAL,
 * or -errno from reading the file. */
int bake_template_load(const char *path, struct bake_template **ret);

void bake_template_free(struct bake_template *t);
DEFINE_CLEANUP_FREE(struct bake_template, bake_template_free)

/* Declare the template's variables in `ip` and resolve them (overrides,
 * environment, defaults; interp.h).  Returns 0 or -EINVAL naming the
 * place (`variables.b.default: variable cycle through 'a'`). */
int bake_template_resolve_variables(struct bake_template *t, struct bake_interp *ip);

/* Expand the source's strings (owners, filter values, image id), which may
 * use variables but no fields.  Returns 0 or -EINVAL naming the place. */
int bake_template_expand_source(struct bake_template *t, struct bake_interp *ip);

/* Expand every other string (steps, tests, output, distribution,
 * manifest) in place, with the fields set in `ip` (`{{ .SourceAMI }}`).
 * `{{env}}` is refused everywhere but manifest.custom_data.  Returns 0 or
 * -EINVAL naming the place. */
int bake_template_expand(struct bake_template *t, struct bake_interp *ip);

/* Parse a duration ("90s", "20m", "2h", "7d", also "1h30m") into seconds.
 * Returns 0 or -EINVAL (message without a place). */
int bake_parse_duration(const char *s, uint64_t *ret_seconds);

const char *bake_step_type_name(enum bake_step_type t);

/* Internal to src/bake (packer.c builds templates with them). */
/* Put "<prefix>: " before the recorded error message; returns -abs(r). */
int bake_error_prefix(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct bake_template *bake_template_new(void);
void bake_strv_add(struct bake_strv *v, const char *s);
void bake_kvs_add(struct bake_kvs *m, const char *key, const char *value);
struct bake_step *bake_template_add_step(struct bake_template *t, enum bake_step_type type);
/* The per-type rules (exactly one of source and content, ...): 0 or -EINVAL. */
int bake_step_check(struct bake_step *s);

/* Typed readers of a JSON value at `place` in the template (native or
 * Packer): 0, or -EINVAL with the message "<place>: expected <what>, got
 * <type>" (bake_bad_type() records it).  A string or string list read
 * replaces what *ret held; a string map's entries are added to *ret. */
int bake_bad_type(const char *place, const char *want, const struct json_value *v);
int bake_get_string(const struct json_value *v, const char *place, char **ret);
int bake_get_bool(const struct json_value *v, const char *place, bool *ret);
int bake_get_strv(const struct json_value *v, const char *place, struct bake_strv *ret);
int bake_get_kvs(const struct json_value *v, const char *place, struct bake_kvs *ret);

/* Read and parse the JSON file `path` (at most JSON_MAX_INPUT bytes),
 * named "<what> '<path>'" in messages (what: "template", "var file").
 * Returns 0 with the tree in *ret_root (json_free()) and, unless ret_text
 * is NULL, the text (NUL-terminated) in *ret_text and its length in
 * *ret_len, both the caller's; or -errno from opening or reading, or
 * -EINVAL for a file too large or not JSON. */
int bake_json_load(const char *path, const char *what, char **ret_text, size_t *ret_len,
                   struct json_value **ret_root);

#endif
