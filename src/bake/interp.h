/* Template interpolation for bake templates (native and Packer): one small
 * engine, `{{ fn args }}` and `{{ .Field }}`, and the masking of sensitive
 * values in log lines.
 *
 * Functions: `var` and `user` (a variable), `env` (an environment variable,
 * only where the caller allows it: variables' defaults and
 * manifest.custom_data, since anything else would poison the layer cache),
 * `timestamp` (Unix seconds), `isotime` (Go layout, default RFC 3339,
 * always UTC), `uuid`.  Arguments are written in backticks or double
 * quotes.  Time and uuid are fixed per struct bake_interp, that is per
 * build: the caller passes now.  Fields (`{{ .SourceAMI }}`) come from a
 * table the caller fills.  Anything else is -EINVAL with a message that
 * names the place.
 *
 * Variables are declared (with a raw default that may use other variables
 * and env), overridden by --var and --var-file, then resolved once; cycles
 * are errors.  Resolved sensitive values are registered for masking.
 */
#ifndef KILN_BAKE_INTERP_H
#define KILN_BAKE_INTERP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/cleanup.h"

#define BAKE_INTERP_ALLOW_ENV 1u

struct bake_interp;

/* A new engine for one build at `now`.  Never NULL. */
struct bake_interp *bake_interp_new(time_t now);
void bake_interp_free(struct bake_interp *ip);
DEFINE_CLEANUP_FREE(struct bake_interp, bake_interp_free)

/* Declare a variable; default_raw (may be NULL) is expanded at resolve
 * time with env allowed.  Returns 0 or -EEXIST. */
int bake_interp_declare(struct bake_interp *ip, const char *name, const char *default_raw,
                        bool required, bool sensitive, const char *env);

/* An override (--var k=v, or one member of a --var-file).  Overrides win
 * over env and defaults; an override of an undeclared variable is an error
 * at resolve time.  Returns 0. */
int bake_interp_set_var(struct bake_interp *ip, const char *name, const char *value);

/* "k=v" as given to --var.  Returns 0 or -EINVAL. */
int bake_interp_parse_var_arg(struct bake_interp *ip, const char *arg);

/* A --var-file: a JSON object of strings.  Returns 0, -EINVAL with a
 * message naming the file and key, or -errno reading it. */
int bake_interp_load_var_file(struct bake_interp *ip, const char *path);

/* Resolve every declared variable: override, else $env when the variable
 * names one and it is set, else the expanded default, else an error when
 * required, else "".  Returns 0 or -EINVAL naming the variable. */
int bake_interp_resolve(struct bake_interp *ip);

/* The resolved value of a variable, or NULL. */
const char *bake_interp_var(const struct bake_interp *ip, const char *name);

/* Set a field (`SourceAMI`, `SourceAMITags.Name`, ...; without the dot). */
void bake_interp_set_field(struct bake_interp *ip, const char *name, const char *value);

/* true for the field names templates may use (whether set or not). */
bool bake_interp_field_known(const char *name);

/* Expand `in`; `place` ("steps[2].content") starts every message.
 * flags: BAKE_INTERP_ALLOW_ENV.  Returns 0 and a new string, or -EINVAL. */
int bake_interp_expand(struct bake_interp *ip, const char *in, const char *place, unsigned flags,
                       char **ret);

/* Register a secret to mask (empty strings are ignored). */
void bake_interp_add_secret(struct bake_interp *ip, const char *value);

/* A copy of `line` with every occurrence of every secret, raw or in its
 * shell-quoted forms ('it'\''s', it\'s), replaced by `<sensitive>`.
 * Never NULL; the caller frees it. */
char *bake_interp_mask(const struct bake_interp *ip, const char *line);

/* Translate a Go time layout ("2006-01-02T15:04:05Z07:00") into a strftime
 * format for a UTC time.  Returns 0 and a new string, or -EINVAL. */
int bake_go_layout_to_strftime(const char *layout, char **ret);

#endif
