/* Template interpolation and secret masking: see interp.h. */
#include "bake/interp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/template.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/strbuf.h"
#include "common/util.h"

#define MAX_EXPANDED (1024 * 1024)

enum var_state { VAR_NEW, VAR_RESOLVING, VAR_DONE };

struct var {
    char *name, *default_raw, *env, *value, *override;
    bool required, sensitive;
    enum var_state state;
};

struct bake_interp {
    time_t now;
    char uuid[37];
    size_t n_vars;
    struct var *vars;
    size_t n_overrides;
    struct var *overrides; /* name + override only, until resolve */
    size_t n_fields;
    char **field_names, **field_values;
    size_t n_secrets;
    char **secrets;
    const char *resolving_place; /* for nested expansion messages */
};

struct bake_interp *bake_interp_new(time_t now)
{
    struct bake_interp *ip = xcalloc(1, sizeof(*ip));
    unsigned char b[16] = { 0 };

    ip->now = now;
    if (random_bytes(b, sizeof(b)) < 0) {
        /* Fall back on the time: a uuid only names a build. */
        memcpy(b, &now, sizeof(now) < sizeof(b) ? sizeof(now) : sizeof(b));
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(ip->uuid, sizeof(ip->uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return ip;
}

static void var_release(struct var *v)
{
    free(v->name);
    free(v->default_raw);
    free(v->env);
    free(v->value);
    free(v->override);
}

void bake_interp_free(struct bake_interp *ip)
{
    if (!ip)
        return;
    for (size_t i = 0; i < ip->n_vars; i++)
        var_release(&ip->vars[i]);
    free(ip->vars);
    for (size_t i = 0; i < ip->n_overrides; i++)
        var_release(&ip->overrides[i]);
    free(ip->overrides);
    for (size_t i = 0; i < ip->n_fields; i++) {
        free(ip->field_names[i]);
        free(ip->field_values[i]);
    }
    free(ip->field_names);
    free(ip->field_values);
    for (size_t i = 0; i < ip->n_secrets; i++)
        free(ip->secrets[i]);
    free(ip->secrets);
    free(ip);
}

static struct var *find_var(const struct bake_interp *ip, const char *name)
{
    for (size_t i = 0; i < ip->n_vars; i++)
        if (strcmp(ip->vars[i].name, name) == 0)
            return &ip->vars[i];
    return NULL;
}

int bake_interp_declare(struct bake_interp *ip, const char *name, const char *default_raw,
                        bool required, bool sensitive, const char *env)
{
    struct var *v;

    if (find_var(ip, name))
        return error_set(EEXIST, "variable '%s' declared twice", name);
    ip->vars = xrealloc(ip->vars, (ip->n_vars + 1) * sizeof(*ip->vars));
    v = &ip->vars[ip->n_vars++];
    memset(v, 0, sizeof(*v));
    v->name = xstrdup(name);
    v->default_raw = default_raw ? xstrdup(default_raw) : NULL;
    v->env = env ? xstrdup(env) : NULL;
    v->required = required;
    v->sensitive = sensitive;
    return 0;
}

int bake_interp_set_var(struct bake_interp *ip, const char *name, const char *value)
{
    for (size_t i = 0; i < ip->n_overrides; i++)
        if (strcmp(ip->overrides[i].name, name) == 0) {
            free(ip->overrides[i].override);
            ip->overrides[i].override = xstrdup(value);
            return 0;
        }
    ip->overrides = xrealloc(ip->overrides, (ip->n_overrides + 1) * sizeof(*ip->overrides));
    memset(&ip->overrides[ip->n_overrides], 0, sizeof(*ip->overrides));
    ip->overrides[ip->n_overrides].name = xstrdup(name);
    ip->overrides[ip->n_overrides].override = xstrdup(value);
    ip->n_overrides++;
    return 0;
}

int bake_interp_parse_var_arg(struct bake_interp *ip, const char *arg)
{
    const char *eq = strchr(arg, '=');
    _cleanup_free_ char *name = NULL;

    if (!eq || eq == arg)
        return error_set(EINVAL, "--var '%s': expected NAME=VALUE", arg);
    name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return -ENOMEM;
    return bake_interp_set_var(ip, name, eq + 1);
}

int bake_interp_load_var_file(struct bake_interp *ip, const char *path)
{
    _cleanup_(json_freep) struct json_value *root = NULL;
    int r;

    r = bake_json_load(path, "var file", NULL, NULL, &root);
    if (r < 0)
        return r;
    if (root->type != JSON_OBJECT)
        return error_set(EINVAL, "var file '%s': expected an object, got %s", path,
                         json_type_name(root->type));
    for (size_t i = 0; i < root->n; i++) {
        if (root->items[i].type != JSON_STRING)
            return error_set(EINVAL, "var file '%s': %s: expected a string, got %s", path,
                             root->keys[i], json_type_name(root->items[i].type));
        bake_interp_set_var(ip, root->keys[i], root->items[i].string);
    }
    return 0;
}

void bake_interp_add_secret(struct bake_interp *ip, const char *value)
{
    if (!value || !*value)
        return;
    for (size_t i = 0; i < ip->n_secrets; i++)
        if (strcmp(ip->secrets[i], value) == 0)
            return;
    ip->secrets = xrealloc(ip->secrets, (ip->n_secrets + 1) * sizeof(*ip->secrets));
    ip->secrets[ip->n_secrets++] = xstrdup(value);
}

static int resolve_var(struct bake_interp *ip, struct var *v, const char *place);

int bake_interp_resolve(struct bake_interp *ip)
{
    int r;

    for (size_t i = 0; i < ip->n_overrides; i++) {
        struct var *v = find_var(ip, ip->overrides[i].name);
        if (!v)
            return error_set(EINVAL, "--var '%s': no such variable in the template",
                             ip->overrides[i].name);
        free(v->override);
        v->override = xstrdup(ip->overrides[i].override);
    }
    for (size_t i = 0; i < ip->n_vars; i++) {
        _cleanup_free_ char *place = xasprintf("variables.%s", ip->vars[i].name);
        r = resolve_var(ip, &ip->vars[i], place);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < ip->n_vars; i++)
        if (ip->vars[i].sensitive)
            bake_interp_add_secret(ip, ip->vars[i].value);
    return 0;
}

static int resolve_var(struct bake_interp *ip, struct var *v, const char *place)
{
    const char *e;
    int r;

    if (v->state == VAR_DONE)
        return 0;
    if (v->state == VAR_RESOLVING)
        return error_set(EINVAL, "%s: variable cycle through '%s'", place, v->name);
    v->state = VAR_RESOLVING;
    if (v->override) {
        v->value = xstrdup(v->override);
    } else if (v->env && (e = getenv(v->env))) {
        v->value = xstrdup(e);
    } else if (v->default_raw) {
        _cleanup_free_ char *dplace = xasprintf("variables.%s.default", v->name);
        r = bake_interp_expand(ip, v->default_raw, dplace, BAKE_INTERP_ALLOW_ENV, &v->value);
        if (r < 0)
            return r;
    } else if (v->required) {
        return error_set(EINVAL, "variables.%s: required variable has no value (give --var %s=...)",
                         v->name, v->name);
    } else {
        v->value = xstrdup("");
    }
    v->state = VAR_DONE;
    return 0;
}

const char *bake_interp_var(const struct bake_interp *ip, const char *name)
{
    const struct var *v = find_var(ip, name);
    return v && v->state == VAR_DONE ? v->value : NULL;
}

void bake_interp_set_field(struct bake_interp *ip, const char *name, const char *value)
{
    for (size_t i = 0; i < ip->n_fields; i++)
        if (strcmp(ip->field_names[i], name) == 0) {
            free(ip->field_values[i]);
            ip->field_values[i] = xstrdup(value);
            return;
        }
    ip->field_names = xrealloc(ip->field_names, (ip->n_fields + 1) * sizeof(char *));
    ip->field_values = xrealloc(ip->field_values, (ip->n_fields + 1) * sizeof(char *));
    ip->field_names[ip->n_fields] = xstrdup(name);
    ip->field_values[ip->n_fields] = xstrdup(value);
    ip->n_fields++;
}

static const char *const known_fields[] = {
    "SourceAMI", "SourceAMIName", "SourceAMIOwner", "BuildRegion", "Version", "BuildName",
};

bool bake_interp_field_known(const char *name)
{
    if (strncmp(name, "SourceAMITags.", 14) == 0 && name[14])
        return true;
    for (size_t i = 0; i < ARRAY_SIZE(known_fields); i++)
        if (strcmp(name, known_fields[i]) == 0)
            return true;
    return false;
}

/* ---- Go layouts ---- */

static const struct {
    const char *go, *fmt;
} layout_tokens[] = {
    /* Longest first where one token is a prefix of another. */
    { "January", "%B" }, { "Monday", "%A" }, { "Z07:00", "Z" },   { "-07:00", "+00:00" },
    { "-0700", "+0000" }, { "2006", "%Y" },  { "Jan", "%b" },     { "Mon", "%a" },
    { "MST", "UTC" },     { "01", "%m" },    { "02", "%d" },      { "_2", "%e" },
    { "03", "%I" },       { "04", "%M" },    { "05", "%S" },      { "06", "%y" },
    { "15", "%H" },       { "PM", "%p" },    { "1", "%-m" },      { "2", "%-d" },
    { "3", "%-I" },       { "4", "%-M" },    { "5", "%-S" },
};

int bake_go_layout_to_strftime(const char *layout, char **ret)
{
    struct strbuf s = { 0 };
    const char *p = layout;

    if (!*layout)
        return error_set(EINVAL, "empty isotime layout");
    while (*p) {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(layout_tokens); i++) {
            size_t n = strlen(layout_tokens[i].go);
            if (strncmp(p, layout_tokens[i].go, n) == 0) {
                strbuf_adds(&s, layout_tokens[i].fmt);
                p += n;
                break;
            }
        }
        if (i < ARRAY_SIZE(layout_tokens))
            continue;
        if (*p == '%')
            strbuf_adds(&s, "%%");
        else
            strbuf_add(&s, p, 1);
        p++;
    }
    *ret = strbuf_steal(&s);
    return 0;
}

/* ---- expansion ---- */

/* One argument at *pp: `...` or "..." (no escapes).  Returns 0 and a new
 * string, 1 when there is no argument, or -EINVAL. */
static int parse_arg(const char **pp, const char *end, const char *place, char **ret)
{
    const char *p = *pp, *close;
    char q;

    while (p < end && *p == ' ')
        p++;
    if (p == end) {
        *pp = p;
        return 1;
    }
    q = *p;
    if (q != '`' && q != '"')
        return error_set(EINVAL, "%s: expected an argument in backticks or quotes", place);
    close = memchr(p + 1, q, (size_t)(end - p - 1));
    if (!close)
        return error_set(EINVAL, "%s: unterminated argument", place);
    *ret = strndup(p + 1, (size_t)(close - p - 1));
    if (!*ret)
        return -ENOMEM;
    *pp = close + 1;
    return 0;
}

static int expand_action(struct bake_interp *ip, const char *a, size_t alen, const char *place,
                         unsigned flags, struct strbuf *out)
{
    const char *p = a, *end = a + alen;
    _cleanup_free_ char *fn = NULL, *arg = NULL, *extra = NULL;
    const char *fstart;
    int r;

    while (p < end && *p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;
    if (p == end)
        return error_set(EINVAL, "%s: empty '{{}}'", place);
    if (*p == '.') {
        _cleanup_free_ char *field = strndup(p + 1, (size_t)(end - p - 1));
        if (!field)
            return -ENOMEM;
        if (!bake_interp_field_known(field))
            return error_set(EINVAL, "%s: unknown field '.%s'", place, field);
        for (size_t i = 0; i < ip->n_fields; i++)
            if (strcmp(ip->field_names[i], field) == 0) {
                strbuf_adds(out, ip->field_values[i]);
                return 0;
            }
        return error_set(EINVAL, "%s: field '.%s' has no value here", place, field);
    }
    fstart = p;
    while (p < end && *p != ' ')
        p++;
    fn = strndup(fstart, (size_t)(p - fstart));
    if (!fn)
        return -ENOMEM;
    r = parse_arg(&p, end, place, &arg);
    if (r < 0)
        return r;
    if (r == 0) {
        r = parse_arg(&p, end, place, &extra);
        if (r < 0)
            return r;
        if (r == 0)
            return error_set(EINVAL, "%s: '%s' takes at most one argument", place, fn);
    }

    if (strcmp(fn, "var") == 0 || strcmp(fn, "user") == 0) {
        struct var *v;
        if (!arg)
            return error_set(EINVAL, "%s: '%s' needs a variable name", place, fn);
        v = find_var(ip, arg);
        if (!v)
            return error_set(EINVAL, "%s: unknown variable '%s'", place, arg);
        if (v->state != VAR_DONE) {
            if (v->state == VAR_NEW && ip->resolving_place) {
                r = resolve_var(ip, v, place);
                if (r < 0)
                    return r;
            } else if (v->state == VAR_RESOLVING) {
                return error_set(EINVAL, "%s: variable cycle through '%s'", place, arg);
            } else {
                return error_set(EINVAL, "%s: variable '%s' is not resolved yet", place, arg);
            }
        }
        strbuf_adds(out, v->value);
        return 0;
    }
    if (strcmp(fn, "env") == 0) {
        const char *e;
        if (!(flags & BAKE_INTERP_ALLOW_ENV))
            return error_set(EINVAL,
                             "%s: 'env' is allowed only in variables and manifest.custom_data",
                             place);
        if (!arg)
            return error_set(EINVAL, "%s: 'env' needs a variable name", place);
        e = getenv(arg);
        strbuf_adds(out, e ? e : "");
        return 0;
    }
    if (strcmp(fn, "timestamp") == 0 || strcmp(fn, "uuid") == 0) {
        char buf[32];
        if (arg)
            return error_set(EINVAL, "%s: '%s' takes no argument", place, fn);
        if (fn[0] == 'u') {
            strbuf_adds(out, ip->uuid);
        } else {
            snprintf(buf, sizeof(buf), "%lld", (long long)ip->now);
            strbuf_adds(out, buf);
        }
        return 0;
    }
    if (strcmp(fn, "isotime") == 0) {
        _cleanup_free_ char *fmt = NULL;
        char buf[256];
        struct tm tm;
        size_t n;

        r = bake_go_layout_to_strftime(arg ? arg : "2006-01-02T15:04:05Z07:00", &fmt);
        if (r < 0)
            return bake_error_prefix(r, "%s", place);
        if (!gmtime_r(&ip->now, &tm))
            return error_set(EINVAL, "%s: time out of range", place);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        n = strftime(buf, sizeof(buf), fmt, &tm);
#pragma GCC diagnostic pop
        if (n == 0 && *fmt)
            return error_set(EINVAL, "%s: isotime layout too long", place);
        strbuf_add(out, buf, n);
        return 0;
    }
    return error_set(EINVAL, "%s: unknown function '%s'", place, fn);
}

int bake_interp_expand(struct bake_interp *ip, const char *in, const char *place, unsigned flags,
                       char **ret)
{
    struct strbuf out = { 0 };
    const char *p = in, *open, *close;
    const char *saved = ip->resolving_place;
    int r = 0;

    ip->resolving_place = place;
    while ((open = strstr(p, "{{"))) {
        strbuf_add(&out, p, (size_t)(open - p));
        close = strstr(open + 2, "}}");
        if (!close) {
            r = error_set(EINVAL, "%s: '{{' without '}}'", place);
            goto out;
        }
        r = expand_action(ip, open + 2, (size_t)(close - open - 2), place, flags, &out);
        if (r < 0)
            goto out;
        if (out.len > MAX_EXPANDED) {
            r = error_set(EINVAL, "%s: expands to more than %d bytes", place, MAX_EXPANDED);
            goto out;
        }
        p = close + 2;
    }
    if (strstr(p, "}}")) {
        r = error_set(EINVAL, "%s: '}}' without '{{'", place);
        goto out;
    }
    strbuf_adds(&out, p);
    *ret = strbuf_steal(&out);
out:
    ip->resolving_place = saved;
    if (r < 0)
        strbuf_release(&out);
    return r;
}

/* ---- masking ---- */

/* The forms a secret takes in a shell command: 'a'\''b' inside single
 * quotes (a'\''b) and with backslashes (a\'b). */
static char *quoted_form(const char *s, bool backslash)
{
    struct strbuf o = { 0 };

    for (const char *p = s; *p; p++) {
        if (!backslash && *p == '\'')
            strbuf_adds(&o, "'\\''");
        else if (backslash && strchr(" \t'\"\\$`!&;|<>()*?[]#~{}", *p)) {
            strbuf_adds(&o, "\\");
            strbuf_add(&o, p, 1);
        } else
            strbuf_add(&o, p, 1);
    }
    return strbuf_steal(&o);
}

static char *replace_all(char *line, const char *what)
{
    struct strbuf o = { 0 };
    const char *p = line, *hit;
    size_t n = strlen(what);

    if (n == 0 || !strstr(line, what))
        return line;
    while ((hit = strstr(p, what))) {
        strbuf_add(&o, p, (size_t)(hit - p));
        strbuf_adds(&o, "<sensitive>");
        p = hit + n;
    }
    strbuf_adds(&o, p);
    free(line);
    return strbuf_steal(&o);
}

char *bake_interp_mask(const struct bake_interp *ip, const char *line)
{
    char *out = xstrdup(line);

    for (size_t i = 0; i < ip->n_secrets; i++) {
        _cleanup_free_ char *q = quoted_form(ip->secrets[i], false);
        _cleanup_free_ char *b = quoted_form(ip->secrets[i], true);
        /* The longer quoted forms first: they may not contain the raw value. */
        out = replace_all(out, q);
        out = replace_all(out, b);
        out = replace_all(out, ip->secrets[i]);
    }
    return out;
}
