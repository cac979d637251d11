/* The native bake template reader: see template.h.  Each object is walked
 * key by key against a table of the keys it may hold, so that an unknown
 * key, a wrong type or a missing field is refused with its full path. */
#include "bake/template.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/interp.h"
#include "bake/packer.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/util.h"

#define SCHEMA "kiln-bake/1"

int bake_error_prefix(int r, const char *fmt, ...)
{
    _cleanup_free_ char *old = xstrdup(error_message() ? error_message() : strerror(abs(r)));
    _cleanup_free_ char *prefix = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&prefix, fmt, ap) < 0)
        prefix = NULL;
    va_end(ap);
    return error_set(r, "%s: %s", prefix ? prefix : "?", old);
}

/* ---- small containers ---- */

void bake_strv_add(struct bake_strv *v, const char *s)
{
    v->items = xrealloc(v->items, (v->n + 1) * sizeof(*v->items));
    v->items[v->n++] = xstrdup(s);
}

static void strv_release(struct bake_strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->items[i]);
    free(v->items);
    v->items = NULL;
    v->n = 0;
}

void bake_kvs_add(struct bake_kvs *m, const char *key, const char *value)
{
    m->items = xrealloc(m->items, (m->n + 1) * sizeof(*m->items));
    m->items[m->n].key = xstrdup(key);
    m->items[m->n].value = xstrdup(value);
    m->n++;
}

static void kvs_release(struct bake_kvs *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
    free(m->items);
}

static void step_release(struct bake_step *s)
{
    free(s->place);
    free(s->name);
    free(s->source);
    free(s->content);
    free(s->destination);
    free(s->path);
    free(s->target);
    free(s->link);
    free(s->line);
    strv_release(&s->inline_cmds);
    free(s->script);
    strv_release(&s->scripts);
    kvs_release(&s->env);
    strv_release(&s->enable);
    strv_release(&s->disable);
    strv_release(&s->mask);
}

void bake_template_free(struct bake_template *t)
{
    if (!t)
        return;
    free(t->schema);
    free(t->name);
    free(t->description);
    free(t->version);
    for (size_t i = 0; i < t->n_variables; i++) {
        free(t->variables[i].name);
        free(t->variables[i].default_value);
        free(t->variables[i].env);
    }
    free(t->variables);
    free(t->source.image_id);
    strv_release(&t->source.owners);
    for (size_t i = 0; i < t->source.n_filters; i++) {
        free(t->source.filters[i].name);
        strv_release(&t->source.filters[i].values);
    }
    free(t->source.filters);
    free(t->build.instance_type);
    for (size_t i = 0; i < t->n_steps; i++)
        step_release(&t->steps[i]);
    free(t->steps);
    free(t->tests.instance_type);
    for (size_t i = 0; i < t->tests.n_steps; i++)
        step_release(&t->tests.steps[i]);
    free(t->tests.steps);
    free(t->output.name);
    free(t->output.description);
    free(t->output.version);
    kvs_release(&t->output.tags);
    kvs_release(&t->output.snapshot_tags);
    strv_release(&t->distribution.regions);
    strv_release(&t->distribution.user_ids);
    strv_release(&t->distribution.groups);
    free(t->manifest.output);
    kvs_release(&t->manifest.custom_data);
    strv_release(&t->warnings);
    free(t);
}

static const char *const step_type_names[] = {
    [BAKE_STEP_FILE] = "file",       [BAKE_STEP_SHELL] = "shell",
    [BAKE_STEP_SYSTEMD] = "systemd", [BAKE_STEP_DELETE] = "delete",
    [BAKE_STEP_SYMLINK] = "symlink", [BAKE_STEP_APPEND_LINE] = "append_line",
    [BAKE_STEP_MKDIR] = "mkdir",     [BAKE_STEP_REBOOT] = "reboot",
};

const char *bake_step_type_name(enum bake_step_type t)
{
    return (size_t)t < ARRAY_SIZE(step_type_names) ? step_type_names[t] : "?";
}

static struct bake_step *add_step(struct bake_step **steps, size_t *n, const char *prefix,
                                  enum bake_step_type type)
{
    struct bake_step *s;

    *steps = xrealloc(*steps, (*n + 1) * sizeof(**steps));
    s = &(*steps)[*n];
    memset(s, 0, sizeof(*s));
    s->place = xasprintf("%s[%zu]", prefix, *n);
    s->name = xasprintf("%zu-%s", *n, bake_step_type_name(type));
    s->type = type;
    s->mode = -1;
    s->uid = s->gid = -1;
    s->cache = true;
    s->mkdirs = true;
    (*n)++;
    return s;
}

struct bake_step *bake_template_add_step(struct bake_template *t, enum bake_step_type type)
{
    return add_step(&t->steps, &t->n_steps, "steps", type);
}

struct bake_template *bake_template_new(void)
{
    struct bake_template *t = xcalloc(1, sizeof(*t));

    t->build.cache = true;
    return t;
}

/* ---- typed readers: each names the place on failure ---- */

int bake_bad_type(const char *place, const char *want, const struct json_value *v)
{
    return error_set(EINVAL, "%s: expected %s, got %s", place, want, json_type_name(v->type));
}

int bake_get_string(const struct json_value *v, const char *place, char **ret)
{
    if (v->type != JSON_STRING)
        return bake_bad_type(place, "a string", v);
    free(*ret);
    *ret = xstrdup(v->string);
    return 0;
}

static int get_nonempty(const struct json_value *v, const char *place, char **ret)
{
    int r = bake_get_string(v, place, ret);
    if (r == 0 && !**ret)
        return error_set(EINVAL, "%s: must not be empty", place);
    return r;
}

int bake_get_bool(const struct json_value *v, const char *place, bool *ret)
{
    if (v->type != JSON_BOOL)
        return bake_bad_type(place, "a boolean", v);
    *ret = v->boolean;
    return 0;
}

static int get_uint(const struct json_value *v, const char *place, uint64_t max, uint64_t *ret)
{
    if (v->type != JSON_NUMBER)
        return bake_bad_type(place, "an integer", v);
    if (!v->is_integer || v->integer < 0 || (uint64_t)v->integer > max)
        return error_set(EINVAL, "%s: expected an integer from 0 to %llu", place,
                         (unsigned long long)max);
    *ret = (uint64_t)v->integer;
    return 0;
}

int bake_get_strv(const struct json_value *v, const char *place, struct bake_strv *ret)
{
    if (v->type != JSON_ARRAY)
        return bake_bad_type(place, "an array of strings", v);
    strv_release(ret);
    for (size_t i = 0; i < v->n; i++) {
        if (v->items[i].type != JSON_STRING) {
            _cleanup_free_ char *p = xasprintf("%s[%zu]", place, i);
            return bake_bad_type(p, "a string", &v->items[i]);
        }
        bake_strv_add(ret, v->items[i].string);
    }
    return 0;
}

int bake_get_kvs(const struct json_value *v, const char *place, struct bake_kvs *ret)
{
    if (v->type != JSON_OBJECT)
        return bake_bad_type(place, "an object of strings", v);
    for (size_t i = 0; i < v->n; i++) {
        if (v->items[i].type != JSON_STRING) {
            _cleanup_free_ char *p = xasprintf("%s.%s", place, v->keys[i]);
            return bake_bad_type(p, "a string", &v->items[i]);
        }
        bake_kvs_add(ret, v->keys[i], v->items[i].string);
    }
    return 0;
}

int bake_parse_duration(const char *s, uint64_t *ret_seconds)
{
    uint64_t total = 0;
    const char *p = s;

    if (!*s)
        return error_set(EINVAL, "empty duration");
    while (*p) {
        uint64_t n = 0, unit;
        if (*p < '0' || *p > '9')
            return error_set(EINVAL, "bad duration '%s' (examples: 90s, 20m, 2h, 7d)", s);
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (uint64_t)(*p - '0');
            if (n > BAKE_TEMPLATE_MAX_DURATION)
                return error_set(EINVAL, "duration '%s' is longer than a year", s);
            p++;
        }
        switch (*p) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default: return error_set(EINVAL, "bad duration '%s' (examples: 90s, 20m, 2h, 7d)", s);
        }
        p++;
        total += n * unit;
        if (total > BAKE_TEMPLATE_MAX_DURATION)
            return error_set(EINVAL, "duration '%s' is longer than a year", s);
    }
    *ret_seconds = total;
    return 0;
}

static int get_duration(const struct json_value *v, const char *place, uint64_t *ret)
{
    _cleanup_free_ char *s = NULL;
    int r = bake_get_string(v, place, &s);

    if (r < 0)
        return r;
    r = bake_parse_duration(s, ret);
    if (r < 0)
        return bake_error_prefix(r, "%s", place);
    return 0;
}

static int get_mode(const struct json_value *v, const char *place, int *ret)
{
    const char *s;
    int mode = 0;

    if (v->type != JSON_STRING)
        return bake_bad_type(place, "an octal string like \"0644\"", v);
    s = v->string;
    if (strlen(s) < 3 || strlen(s) > 4)
        return error_set(EINVAL, "%s: bad mode '%s' (an octal string like \"0644\")", place, s);
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '7')
            return error_set(EINVAL, "%s: bad mode '%s' (an octal string like \"0644\")", place,
                             s);
        mode = mode * 8 + (*p - '0');
    }
    *ret = mode;
    return 0;
}

static int parse_id(const char *s, size_t n, int64_t *ret)
{
    int64_t v = 0;

    if (n == 0 || n > 10)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > 0xfffffffe)
        return -EINVAL;
    *ret = v;
    return 0;
}

static int get_owner(const struct json_value *v, const char *place, int64_t *uid, int64_t *gid)
{
    const char *s, *colon;

    if (v->type != JSON_STRING)
        return bake_bad_type(place, "a string \"uid:gid\"", v);
    s = v->string;
    colon = strchr(s, ':');
    if (!colon || parse_id(s, (size_t)(colon - s), uid) < 0 ||
        parse_id(colon + 1, strlen(colon + 1), gid) < 0)
        return error_set(EINVAL, "%s: bad owner '%s' (numeric \"uid:gid\", like \"0:0\")", place,
                         s);
    return 0;
}

static int get_executor(const struct json_value *v, const char *place, enum bake_executor *ret)
{
    static const char *const names[] = { "auto", "offline", "agent" };

    if (v->type != JSON_STRING)
        return bake_bad_type(place, "a string", v);
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(v->string, names[i]) == 0) {
            *ret = (enum bake_executor)i;
            return 0;
        }
    return error_set(EINVAL, "%s: unknown executor '%s' (auto, offline or agent)", place,
                     v->string);
}

static int unknown_key(const char *place, const char *key)
{
    return error_set(EINVAL, "%s%s%s: unknown key", place, *place ? "." : "", key);
}

/* The place of key `key` under `place`. */
static char *sub(const char *place, const char *key)
{
    return *place ? xasprintf("%s.%s", place, key) : xstrdup(key);
}

static int need_object(const struct json_value *v, const char *place)
{
    if (v->type != JSON_OBJECT)
        return bake_bad_type(place, "an object", v);
    return 0;
}

static bool is_comment(const char *key)
{
    return key[0] == '_';
}

/* ---- sections ---- */

static int parse_variables(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "variables");
    if (r < 0)
        return r;
    t->variables = xcalloc(v->n ? v->n : 1, sizeof(*t->variables));
    for (size_t i = 0; i < v->n; i++) {
        const struct json_value *d = &v->items[i];
        struct bake_variable *var;
        _cleanup_free_ char *place = xasprintf("variables.%s", v->keys[i]);

        if (is_comment(v->keys[i]))
            continue;
        if (!*v->keys[i] || strpbrk(v->keys[i], "`\"{} "))
            return error_set(EINVAL, "%s: bad variable name", place);
        r = need_object(d, place);
        if (r < 0)
            return r;
        var = &t->variables[t->n_variables++];
        var->name = xstrdup(v->keys[i]);
        for (size_t k = 0; k < d->n; k++) {
            const char *key = d->keys[k];
            const struct json_value *x = &d->items[k];
            _cleanup_free_ char *kp = sub(place, key);
            if (is_comment(key))
                continue;
            if (strcmp(key, "type") == 0) {
                if (x->type != JSON_STRING)
                    return bake_bad_type(kp, "a string", x);
                if (strcmp(x->string, "string") != 0)
                    return error_set(EINVAL, "%s: unknown type '%s' (only \"string\")", kp,
                                     x->string);
            } else if (strcmp(key, "default") == 0) {
                r = bake_get_string(x, kp, &var->default_value);
            } else if (strcmp(key, "required") == 0) {
                r = bake_get_bool(x, kp, &var->required);
            } else if (strcmp(key, "sensitive") == 0) {
                r = bake_get_bool(x, kp, &var->sensitive);
            } else if (strcmp(key, "env") == 0) {
                r = get_nonempty(x, kp, &var->env);
            } else if (strcmp(key, "description") == 0) {
                _cleanup_free_ char *ignored = NULL;
                r = bake_get_string(x, kp, &ignored);
            } else {
                return unknown_key(place, key);
            }
            if (r < 0)
                return r;
        }
        if (var->required && var->default_value)
            return error_set(EINVAL, "%s: a required variable has no default", place);
    }
    return 0;
}

static int parse_filter_map(struct bake_source *s, const struct json_value *v, const char *place)
{
    int r = need_object(v, place);
    if (r < 0)
        return r;
    s->filters = xcalloc(v->n ? v->n : 1, sizeof(*s->filters));
    for (size_t i = 0; i < v->n; i++) {
        _cleanup_free_ char *kp = sub(place, v->keys[i]);
        struct bake_filter *f = &s->filters[s->n_filters++];
        f->name = xstrdup(v->keys[i]);
        if (v->items[i].type == JSON_STRING)
            bake_strv_add(&f->values, v->items[i].string);
        else if (v->items[i].type == JSON_ARRAY) {
            r = bake_get_strv(&v->items[i], kp, &f->values);
            if (r < 0)
                return r;
            if (f->values.n == 0)
                return error_set(EINVAL, "%s: needs at least one value", kp);
        } else
            return bake_bad_type(kp, "a string or an array of strings", &v->items[i]);
    }
    return 0;
}

static int parse_source(struct bake_template *t, const struct json_value *v)
{
    struct bake_source *s = &t->source;
    int r = need_object(v, "source");

    if (r < 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("source", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "image_id") == 0) {
            r = get_nonempty(x, kp, &s->image_id);
        } else if (strcmp(key, "image_filter") == 0) {
            bool have_owners = false;
            r = need_object(x, kp);
            if (r < 0)
                return r;
            s->has_filter = true;
            for (size_t k = 0; k < x->n; k++) {
                _cleanup_free_ char *fp = sub(kp, x->keys[k]);
                if (is_comment(x->keys[k]))
                    continue;
                if (strcmp(x->keys[k], "owners") == 0) {
                    r = bake_get_strv(&x->items[k], fp, &s->owners);
                    have_owners = true;
                } else if (strcmp(x->keys[k], "filters") == 0) {
                    r = parse_filter_map(s, &x->items[k], fp);
                } else if (strcmp(x->keys[k], "most_recent") == 0) {
                    r = bake_get_bool(&x->items[k], fp, &s->most_recent);
                } else {
                    return unknown_key(kp, x->keys[k]);
                }
                if (r < 0)
                    return r;
            }
            if (!have_owners || s->owners.n == 0)
                return error_set(EINVAL, "%s.owners: required (at least one owner)", kp);
            if (s->n_filters == 0)
                return error_set(EINVAL, "%s.filters: required (at least one filter)", kp);
        } else {
            return unknown_key("source", key);
        }
        if (r < 0)
            return r;
    }
    if (!s->image_id && !s->has_filter)
        return error_set(EINVAL, "source: needs image_id or image_filter");
    if (s->image_id && s->has_filter)
        return error_set(EINVAL, "source: image_id and image_filter are exclusive");
    return 0;
}

static int parse_build(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "build");

    if (r < 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("build", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "instance_type") == 0) {
            r = get_nonempty(x, kp, &t->build.instance_type);
        } else if (strcmp(key, "root_volume_gib") == 0) {
            r = get_uint(x, kp, 16384, &t->build.root_volume_gib);
            if (r == 0 && t->build.root_volume_gib == 0)
                r = error_set(EINVAL, "%s: expected an integer from 1 to 16384", kp);
        } else if (strcmp(key, "executor") == 0) {
            r = get_executor(x, kp, &t->build.executor);
        } else if (strcmp(key, "timeout") == 0) {
            r = get_duration(x, kp, &t->build.timeout_s);
        } else if (strcmp(key, "on_error") == 0) {
            if (x->type != JSON_STRING)
                return bake_bad_type(kp, "a string", x);
            if (strcmp(x->string, "cleanup") == 0)
                t->build.on_error = BAKE_ON_ERROR_CLEANUP;
            else if (strcmp(x->string, "keep") == 0)
                t->build.on_error = BAKE_ON_ERROR_KEEP;
            else if (strcmp(x->string, "abort") == 0)
                t->build.on_error = BAKE_ON_ERROR_ABORT;
            else
                return error_set(EINVAL, "%s: unknown value '%s' (cleanup, keep or abort)", kp,
                                 x->string);
        } else if (strcmp(key, "cache") == 0) {
            r = bake_get_bool(x, kp, &t->build.cache);
        } else {
            return unknown_key("build", key);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* Which keys each step type takes, beyond the common ones. */
static const char *const type_keys[][8] = {
    [BAKE_STEP_FILE] = { "source", "content", "destination", "mode", "owner", "mkdirs" },
    [BAKE_STEP_SHELL] = { "inline", "script", "scripts", "env" },
    [BAKE_STEP_SYSTEMD] = { "enable", "disable", "mask" },
    [BAKE_STEP_DELETE] = { "path", "recursive" },
    [BAKE_STEP_SYMLINK] = { "target", "link" },
    [BAKE_STEP_APPEND_LINE] = { "path", "line" },
    [BAKE_STEP_MKDIR] = { "path", "mode", "owner" },
    [BAKE_STEP_REBOOT] = { NULL },
};

static bool type_takes(enum bake_step_type type, const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(type_keys[0]) && type_keys[type][i]; i++)
        if (strcmp(type_keys[type][i], key) == 0)
            return true;
    return false;
}

static bool any_type_takes(const char *key)
{
    for (size_t t = 0; t < ARRAY_SIZE(type_keys); t++)
        if (type_takes((enum bake_step_type)t, key))
            return true;
    return false;
}

static int need_abs(const char *path, const char *place)
{
    if (path[0] != '/')
        return error_set(EINVAL, "%s: '%s' is not an absolute path", place, path);
    return 0;
}

static int check_units(const struct bake_strv *v, const char *place)
{
    for (size_t i = 0; i < v->n; i++)
        if (!*v->items[i] || strchr(v->items[i], '/'))
            return error_set(EINVAL, "%s[%zu]: bad unit name '%s'", place, i, v->items[i]);
    return 0;
}

static int step_field(struct bake_step *s, const char *key, const struct json_value *x,
                      const char *kp)
{
    if (strcmp(key, "source") == 0)
        return get_nonempty(x, kp, &s->source);
    if (strcmp(key, "content") == 0)
        return bake_get_string(x, kp, &s->content);
    if (strcmp(key, "destination") == 0)
        return get_nonempty(x, kp, &s->destination);
    if (strcmp(key, "path") == 0)
        return get_nonempty(x, kp, &s->path);
    if (strcmp(key, "mode") == 0)
        return get_mode(x, kp, &s->mode);
    if (strcmp(key, "owner") == 0)
        return get_owner(x, kp, &s->uid, &s->gid);
    if (strcmp(key, "mkdirs") == 0)
        return bake_get_bool(x, kp, &s->mkdirs);
    if (strcmp(key, "recursive") == 0)
        return bake_get_bool(x, kp, &s->recursive);
    if (strcmp(key, "target") == 0)
        return get_nonempty(x, kp, &s->target);
    if (strcmp(key, "link") == 0)
        return get_nonempty(x, kp, &s->link);
    if (strcmp(key, "line") == 0)
        return bake_get_string(x, kp, &s->line);
    if (strcmp(key, "inline") == 0)
        return bake_get_strv(x, kp, &s->inline_cmds);
    if (strcmp(key, "script") == 0)
        return get_nonempty(x, kp, &s->script);
    if (strcmp(key, "scripts") == 0)
        return bake_get_strv(x, kp, &s->scripts);
    if (strcmp(key, "env") == 0)
        return bake_get_kvs(x, kp, &s->env);
    if (strcmp(key, "enable") == 0)
        return bake_get_strv(x, kp, &s->enable);
    if (strcmp(key, "disable") == 0)
        return bake_get_strv(x, kp, &s->disable);
    if (strcmp(key, "mask") == 0)
        return bake_get_strv(x, kp, &s->mask);
    return unknown_key("", kp);
}

/* Per-type rules once all keys are read. */
int bake_step_check(struct bake_step *s)
{
    const char *p = s->place;
    int r;

    switch (s->type) {
    case BAKE_STEP_FILE:
        if (!s->destination)
            return error_set(EINVAL, "%s.destination: required", p);
        if (!s->source == !s->content)
            return error_set(EINVAL, "%s: needs exactly one of source and content", p);
        return need_abs(s->destination, p);
    case BAKE_STEP_SHELL: {
        int n = (s->inline_cmds.n > 0) + (s->script != NULL) + (s->scripts.n > 0);
        if (n != 1)
            return error_set(EINVAL, "%s: needs exactly one of inline, script and scripts", p);
        if (s->executor == BAKE_EXEC_OFFLINE)
            return error_set(EINVAL, "%s.executor: a shell step runs only through the agent", p);
        for (size_t i = 0; i < s->env.n; i++) {
            const char *k = s->env.items[i].key;
            if (!*k || strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                           strlen(k) ||
                (k[0] >= '0' && k[0] <= '9'))
                return error_set(EINVAL, "%s.env.%s: bad environment variable name", p, k);
        }
        return 0;
    }
    case BAKE_STEP_SYSTEMD:
        if (s->enable.n + s->disable.n + s->mask.n == 0)
            return error_set(EINVAL, "%s: needs at least one of enable, disable and mask", p);
        {
            _cleanup_free_ char *a = xasprintf("%s.enable", p), *b = xasprintf("%s.disable", p),
                                *c = xasprintf("%s.mask", p);
            if ((r = check_units(&s->enable, a)) < 0 || (r = check_units(&s->disable, b)) < 0 ||
                (r = check_units(&s->mask, c)) < 0)
                return r;
        }
        return 0;
    case BAKE_STEP_DELETE:
    case BAKE_STEP_MKDIR:
        if (!s->path)
            return error_set(EINVAL, "%s.path: required", p);
        if (s->type == BAKE_STEP_DELETE && strcmp(s->path, "/") == 0)
            return error_set(EINVAL, "%s.path: refusing to delete '/'", p);
        return need_abs(s->path, p);
    case BAKE_STEP_SYMLINK:
        if (!s->target)
            return error_set(EINVAL, "%s.target: required", p);
        if (!s->link)
            return error_set(EINVAL, "%s.link: required", p);
        return need_abs(s->link, p);
    case BAKE_STEP_APPEND_LINE:
        if (!s->path)
            return error_set(EINVAL, "%s.path: required", p);
        if (!s->line)
            return error_set(EINVAL, "%s.line: required", p);
        if (strchr(s->line, '\n'))
            return error_set(EINVAL, "%s.line: must be one line (no newline)", p);
        return need_abs(s->path, p);
    case BAKE_STEP_REBOOT:
        if (s->executor == BAKE_EXEC_OFFLINE)
            return error_set(EINVAL, "%s.executor: a reboot step runs only through the agent",
                             p);
        return 0;
    }
    return 0;
}

static int parse_step(struct bake_step **steps, size_t *n, const char *prefix,
                      const struct json_value *v, bool in_tests)
{
    _cleanup_free_ char *place = xasprintf("%s[%zu]", prefix, *n);
    const struct json_value *type = json_get(v, "type");
    _cleanup_free_ char *tp = NULL;
    struct bake_step *s;
    size_t ti;
    int r;

    r = need_object(v, place);
    if (r < 0)
        return r;
    tp = sub(place, "type");
    if (!type)
        return error_set(EINVAL, "%s: required", tp);
    if (type->type != JSON_STRING)
        return bake_bad_type(tp, "a string", type);
    for (ti = 0; ti < ARRAY_SIZE(step_type_names); ti++)
        if (strcmp(type->string, step_type_names[ti]) == 0)
            break;
    if (ti == ARRAY_SIZE(step_type_names))
        return error_set(EINVAL,
                         "%s: unknown step type '%s' (file, shell, systemd, delete, symlink, "
                         "append_line, mkdir, reboot)",
                         tp, type->string);
    s = add_step(steps, n, prefix, (enum bake_step_type)ti);
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub(place, key);
        if (is_comment(key) || strcmp(key, "type") == 0)
            continue;
        if (strcmp(key, "name") == 0) {
            r = get_nonempty(x, kp, &s->name);
        } else if (strcmp(key, "phase") == 0) {
            if (x->type != JSON_STRING)
                return bake_bad_type(kp, "a string", x);
            if (strcmp(x->string, "build") == 0)
                s->phase = BAKE_PHASE_BUILD;
            else if (strcmp(x->string, "validate") == 0 && !in_tests)
                s->phase = BAKE_PHASE_VALIDATE;
            else
                return error_set(EINVAL, "%s: unknown phase '%s' (%s)", kp, x->string,
                                 in_tests ? "tests steps have no phase" : "build or validate");
        } else if (strcmp(key, "timeout") == 0) {
            r = get_duration(x, kp, &s->timeout_s);
        } else if (strcmp(key, "max_retries") == 0) {
            uint64_t m;
            r = get_uint(x, kp, 10, &m);
            s->max_retries = (unsigned)m;
        } else if (strcmp(key, "cache") == 0) {
            if (x->type == JSON_BOOL) {
                s->cache = x->boolean;
            } else if (x->type == JSON_OBJECT) {
                for (size_t k = 0; k < x->n; k++) {
                    _cleanup_free_ char *cp = sub(kp, x->keys[k]);
                    if (is_comment(x->keys[k]))
                        continue;
                    if (strcmp(x->keys[k], "ttl") != 0)
                        return unknown_key(kp, x->keys[k]);
                    r = get_duration(&x->items[k], cp, &s->cache_ttl_s);
                    if (r < 0)
                        return r;
                }
            } else {
                return bake_bad_type(kp, "a boolean or an object {\"ttl\": ...}", x);
            }
        } else if (strcmp(key, "executor") == 0) {
            r = get_executor(x, kp, &s->executor);
        } else if (type_takes(s->type, key)) {
            r = step_field(s, key, x, kp);
        } else if (any_type_takes(key)) {
            return error_set(EINVAL, "%s: not a key of a '%s' step", kp,
                             bake_step_type_name(s->type));
        } else {
            return unknown_key(place, key);
        }
        if (r < 0)
            return r;
    }
    return bake_step_check(s);
}

static int parse_steps(struct bake_step **steps, size_t *n, const char *prefix,
                       const struct json_value *v, bool in_tests)
{
    int r;

    if (v->type != JSON_ARRAY)
        return bake_bad_type(prefix, "an array of steps", v);
    if (v->n > BAKE_TEMPLATE_MAX_STEPS)
        return error_set(EINVAL, "%s: more than %d steps", prefix, BAKE_TEMPLATE_MAX_STEPS);
    for (size_t i = 0; i < v->n; i++) {
        r = parse_step(steps, n, prefix, &v->items[i], in_tests);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_tests(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "tests");

    if (r < 0)
        return r;
    t->has_tests = true;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("tests", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "instance_type") == 0)
            r = get_nonempty(x, kp, &t->tests.instance_type);
        else if (strcmp(key, "timeout") == 0)
            r = get_duration(x, kp, &t->tests.timeout_s);
        else if (strcmp(key, "steps") == 0)
            r = parse_steps(&t->tests.steps, &t->tests.n_steps, "tests.steps", x, true);
        else
            return unknown_key("tests", key);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < t->tests.n_steps; i++)
        if (t->tests.steps[i].type == BAKE_STEP_REBOOT)
            return error_set(EINVAL, "%s: a test instance is not rebooted by a step",
                             t->tests.steps[i].place);
    return 0;
}

static int parse_output(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "output");

    if (r < 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("output", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "name") == 0)
            r = get_nonempty(x, kp, &t->output.name);
        else if (strcmp(key, "description") == 0)
            r = bake_get_string(x, kp, &t->output.description);
        else if (strcmp(key, "version") == 0)
            r = get_nonempty(x, kp, &t->output.version);
        else if (strcmp(key, "tags") == 0)
            r = bake_get_kvs(x, kp, &t->output.tags);
        else if (strcmp(key, "snapshot_tags") == 0)
            r = bake_get_kvs(x, kp, &t->output.snapshot_tags);
        else
            return unknown_key("output", key);
        if (r < 0)
            return r;
    }
    if (!t->output.name)
        return error_set(EINVAL, "output.name: required");
    return 0;
}

static int parse_distribution(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "distribution");

    if (r < 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("distribution", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "regions") == 0) {
            r = bake_get_strv(x, kp, &t->distribution.regions);
        } else if (strcmp(key, "deprecate_after") == 0) {
            r = get_duration(x, kp, &t->distribution.deprecate_after_s);
        } else if (strcmp(key, "launch_permission") == 0) {
            r = need_object(x, kp);
            if (r < 0)
                return r;
            for (size_t k = 0; k < x->n; k++) {
                _cleanup_free_ char *lp = sub(kp, x->keys[k]);
                if (is_comment(x->keys[k]))
                    continue;
                if (strcmp(x->keys[k], "user_ids") == 0)
                    r = bake_get_strv(&x->items[k], lp, &t->distribution.user_ids);
                else if (strcmp(x->keys[k], "groups") == 0) {
                    r = bake_get_strv(&x->items[k], lp, &t->distribution.groups);
                    for (size_t g = 0; r == 0 && g < t->distribution.groups.n; g++)
                        if (strcmp(t->distribution.groups.items[g], "all") != 0)
                            r = error_set(EINVAL, "%s[%zu]: unknown group '%s' (only \"all\")",
                                          lp, g, t->distribution.groups.items[g]);
                } else
                    return unknown_key(kp, x->keys[k]);
                if (r < 0)
                    return r;
            }
        } else {
            return unknown_key("distribution", key);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_manifest(struct bake_template *t, const struct json_value *v)
{
    int r = need_object(v, "manifest");

    if (r < 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = sub("manifest", key);
        if (is_comment(key))
            continue;
        if (strcmp(key, "output") == 0)
            r = get_nonempty(x, kp, &t->manifest.output);
        else if (strcmp(key, "custom_data") == 0)
            r = bake_get_kvs(x, kp, &t->manifest.custom_data);
        else
            return unknown_key("manifest", key);
        if (r < 0)
            return r;
    }
    if (!t->manifest.output)
        t->manifest.output = xstrdup("bake-manifest.json");
    return 0;
}

static int parse_root(struct bake_template *t, const struct json_value *root)
{
    const struct json_value *steps = NULL;
    bool have_source = false;
    int r;

    if (root->type != JSON_OBJECT)
        return error_set(EINVAL, "template: expected an object, got %s",
                         json_type_name(root->type));
    for (size_t i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        const struct json_value *x = &root->items[i];
        if (is_comment(key))
            continue;
        if (strcmp(key, "schema") == 0) {
            r = bake_get_string(x, key, &t->schema);
            if (r == 0 && strcmp(t->schema, SCHEMA) != 0)
                r = error_set(EINVAL, "schema: unknown schema '%s' (this kiln reads \"%s\")",
                              t->schema, SCHEMA);
        } else if (strcmp(key, "name") == 0) {
            r = get_nonempty(x, key, &t->name);
        } else if (strcmp(key, "description") == 0) {
            r = bake_get_string(x, key, &t->description);
        } else if (strcmp(key, "version") == 0) {
            r = get_nonempty(x, key, &t->version);
        } else if (strcmp(key, "variables") == 0) {
            r = parse_variables(t, x);
        } else if (strcmp(key, "source") == 0) {
            r = parse_source(t, x);
            have_source = true;
        } else if (strcmp(key, "build") == 0) {
            r = parse_build(t, x);
        } else if (strcmp(key, "steps") == 0) {
            steps = x; /* after variables, whatever the key order */
            r = 0;
        } else if (strcmp(key, "tests") == 0) {
            r = parse_tests(t, x);
        } else if (strcmp(key, "output") == 0) {
            r = parse_output(t, x);
        } else if (strcmp(key, "distribution") == 0) {
            r = parse_distribution(t, x);
        } else if (strcmp(key, "manifest") == 0) {
            r = parse_manifest(t, x);
        } else {
            return unknown_key("", key);
        }
        if (r < 0)
            return r;
    }
    if (!t->schema)
        return error_set(EINVAL, "schema: required (\"%s\")", SCHEMA);
    if (!t->name)
        return error_set(EINVAL, "name: required");
    if (!have_source)
        return error_set(EINVAL, "source: required (image_id or image_filter)");
    if (!steps)
        return error_set(EINVAL, "steps: required");
    r = parse_steps(&t->steps, &t->n_steps, "steps", steps, false);
    if (r < 0)
        return r;
    if (t->n_steps == 0)
        return error_set(EINVAL, "steps: at least one step");
    if (!t->output.name)
        t->output.name = xstrdup(t->name);
    return 0;
}

int bake_template_parse(const char *text, size_t len, struct bake_template **ret)
{
    _cleanup_(json_freep) struct json_value *root = NULL;
    _cleanup_(bake_template_freep) struct bake_template *t = bake_template_new();
    int r;

    r = json_parse(text, len, &root);
    if (r < 0)
        return r;
    r = parse_root(t, root);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(t);
    return 0;
}

int bake_json_load(const char *path, const char *what, char **ret_text, size_t *ret_len,
                   struct json_value **ret_root)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    _cleanup_free_ char *text = NULL;
    struct json_value *root = NULL;
    size_t len;
    int r;

    if (!f)
        return error_set(errno, "cannot open %s '%s': %s", what, path, strerror(errno));
    text = xmalloc(JSON_MAX_INPUT + 1);
    len = fread(text, 1, JSON_MAX_INPUT + 1, f);
    if (ferror(f))
        return error_set(EIO, "cannot read %s '%s'", what, path);
    if (len > JSON_MAX_INPUT)
        return error_set(EINVAL, "%s '%s' is larger than %d bytes", what, path, JSON_MAX_INPUT);
    r = json_parse(text, len, &root);
    if (r < 0)
        return bake_error_prefix(r, "%s '%s'", what, path);
    text[len] = '\0';
    if (ret_text) {
        *ret_text = TAKE_PTR(text);
        *ret_len = len;
    }
    *ret_root = root;
    return 0;
}

int bake_template_load(const char *path, struct bake_template **ret)
{
    _cleanup_free_ char *text = NULL;
    _cleanup_(json_freep) struct json_value *root = NULL;
    struct bake_template *t = NULL;
    size_t len;
    int r;

    r = bake_json_load(path, "template", &text, &len, &root);
    if (r < 0)
        return r;
    if (json_get(root, "builders"))
        r = bake_packer_parse(text, len, &t);
    else
        r = bake_template_parse(text, len, &t);
    if (r < 0)
        return bake_error_prefix(r, "template '%s'", path);
    *ret = t;
    return 0;
}

/* ---- interpolation over the whole template ---- */

int bake_template_resolve_variables(struct bake_template *t, struct bake_interp *ip)
{
    int r;

    for (size_t i = 0; i < t->n_variables; i++) {
        const struct bake_variable *v = &t->variables[i];
        r = bake_interp_declare(ip, v->name, v->default_value, v->required, v->sensitive,
                                v->env);
        if (r < 0)
            return r;
    }
    return bake_interp_resolve(ip);
}

static int expand_str(struct bake_interp *ip, char **s, const char *place, unsigned flags)
{
    char *out;
    int r;

    if (!*s)
        return 0;
    r = bake_interp_expand(ip, *s, place, flags, &out);
    if (r < 0)
        return r;
    free(*s);
    *s = out;
    return 0;
}

static int expand_strv(struct bake_interp *ip, struct bake_strv *v, const char *place)
{
    for (size_t i = 0; i < v->n; i++) {
        _cleanup_free_ char *p = xasprintf("%s[%zu]", place, i);
        int r = expand_str(ip, &v->items[i], p, 0);
        if (r < 0)
            return r;
    }
    return 0;
}

static int expand_kvs(struct bake_interp *ip, struct bake_kvs *m, const char *place,
                      unsigned flags)
{
    for (size_t i = 0; i < m->n; i++) {
        _cleanup_free_ char *p = xasprintf("%s.%s", place, m->items[i].key);
        int r = expand_str(ip, &m->items[i].value, p, flags);
        if (r < 0)
            return r;
    }
    return 0;
}

int bake_template_expand_source(struct bake_template *t, struct bake_interp *ip)
{
    int r = expand_str(ip, &t->source.image_id, "source.image_id", 0);

    if (r < 0)
        return r;
    r = expand_strv(ip, &t->source.owners, "source.image_filter.owners");
    for (size_t i = 0; r == 0 && i < t->source.n_filters; i++) {
        _cleanup_free_ char *p =
            xasprintf("source.image_filter.filters.%s", t->source.filters[i].name);
        r = expand_strv(ip, &t->source.filters[i].values, p);
    }
    return r;
}

static int expand_step(struct bake_interp *ip, struct bake_step *s)
{
#define F(field)                                                                                   \
    do {                                                                                           \
        _cleanup_free_ char *p_ = xasprintf("%s.%s", s->place, #field);                            \
        int r_ = expand_str(ip, &s->field, p_, 0);                                                 \
        if (r_ < 0)                                                                                \
            return r_;                                                                             \
    } while (0)
#define V(field, key)                                                                              \
    do {                                                                                           \
        _cleanup_free_ char *p_ = xasprintf("%s.%s", s->place, key);                               \
        int r_ = expand_strv(ip, &s->field, p_);                                                   \
        if (r_ < 0)                                                                                \
            return r_;                                                                             \
    } while (0)
    F(name);
    F(source);
    F(content);
    F(destination);
    F(path);
    F(target);
    F(link);
    F(line);
    F(script);
    V(inline_cmds, "inline");
    V(scripts, "scripts");
    V(enable, "enable");
    V(disable, "disable");
    V(mask, "mask");
#undef F
#undef V
    {
        _cleanup_free_ char *p = xasprintf("%s.env", s->place);
        int r = expand_kvs(ip, &s->env, p, 0);
        if (r < 0)
            return r;
    }
    if (s->line && strchr(s->line, '\n'))
        return error_set(EINVAL, "%s.line: must be one line (no newline)", s->place);
    return 0;
}

int bake_template_expand(struct bake_template *t, struct bake_interp *ip)
{
    int r;

    for (size_t i = 0; i < t->n_steps; i++)
        if ((r = expand_step(ip, &t->steps[i])) < 0)
            return r;
    for (size_t i = 0; i < t->tests.n_steps; i++)
        if ((r = expand_step(ip, &t->tests.steps[i])) < 0)
            return r;
    if ((r = expand_str(ip, &t->output.name, "output.name", 0)) < 0 ||
        (r = expand_str(ip, &t->output.description, "output.description", 0)) < 0 ||
        (r = expand_str(ip, &t->output.version, "output.version", 0)) < 0 ||
        (r = expand_kvs(ip, &t->output.tags, "output.tags", 0)) < 0 ||
        (r = expand_kvs(ip, &t->output.snapshot_tags, "output.snapshot_tags", 0)) < 0 ||
        (r = expand_strv(ip, &t->distribution.regions, "distribution.regions")) < 0 ||
        (r = expand_strv(ip, &t->distribution.user_ids,
                         "distribution.launch_permission.user_ids")) < 0 ||
        (r = expand_str(ip, &t->manifest.output, "manifest.output", 0)) < 0 ||
        (r = expand_kvs(ip, &t->manifest.custom_data, "manifest.custom_data",
                        BAKE_INTERP_ALLOW_ENV)) < 0)
        return r;
    return 0;
}
