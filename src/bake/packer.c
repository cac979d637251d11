/* The Packer legacy JSON subset: see packer.h.  Each accepted key is
 * translated into the native struct; keys kiln replaces are noted in
 * t->warnings; the rest are refused with their path. */
#include "bake/packer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bake/template.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/util.h"

static int outside(const char *place)
{
    return error_set(EINVAL, "%s: outside kiln's Packer subset (docs/baking.md)", place);
}

static void warn(struct bake_template *t, const char *place, const char *why)
{
    _cleanup_free_ char *w = xasprintf("%s: %s", place, why);
    bake_strv_add(&t->warnings, w);
}

/* Builder keys that kiln's own settings replace: accepted, ignored. */
static const char *const ignored_builder_keys[] = {
    "access_key", "secret_key", "token", "profile", "assume_role", "vault_aws_engine",
    "custom_endpoint_ec2", "skip_region_validation", "shared_credentials_file",
};

static int parse_source_filter(struct bake_template *t, const struct json_value *v,
                               const char *place)
{
    struct bake_source *s = &t->source;

    if (v->type != JSON_OBJECT)
        return bake_bad_type(place, "an object", v);
    s->has_filter = true;
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct json_value *x = &v->items[i];
        _cleanup_free_ char *kp = xasprintf("%s.%s", place, key);
        int r;
        if (strcmp(key, "owners") == 0) {
            r = bake_get_strv(x, kp, &s->owners);
        } else if (strcmp(key, "most_recent") == 0) {
            r = bake_get_bool(x, kp, &s->most_recent);
        } else if (strcmp(key, "filters") == 0) {
            if (x->type != JSON_OBJECT)
                return bake_bad_type(kp, "an object of strings", x);
            s->filters = xcalloc(x->n ? x->n : 1, sizeof(*s->filters));
            for (size_t k = 0; k < x->n; k++) {
                _cleanup_free_ char *fp = xasprintf("%s.%s", kp, x->keys[k]);
                if (x->items[k].type != JSON_STRING)
                    return bake_bad_type(fp, "a string", &x->items[k]);
                s->filters[s->n_filters].name = xstrdup(x->keys[k]);
                bake_strv_add(&s->filters[s->n_filters].values, x->items[k].string);
                s->n_filters++;
            }
            r = 0;
        } else {
            return outside(kp);
        }
        if (r < 0)
            return r;
    }
    if (s->owners.n == 0)
        return error_set(EINVAL, "%s.owners: required (at least one owner)", place);
    if (s->n_filters == 0)
        return error_set(EINVAL, "%s.filters: required (at least one filter)", place);
    return 0;
}

static int parse_builder(struct bake_template *t, const struct json_value *b)
{
    const char *place = "builders[0]";
    const struct json_value *type = json_get(b, "type");
    _cleanup_free_ char *source_ami = NULL;
    int r;

    if (b->type != JSON_OBJECT)
        return bake_bad_type(place, "an object", b);
    if (!type)
        return error_set(EINVAL, "%s.type: required", place);
    if (type->type != JSON_STRING)
        return bake_bad_type("builders[0].type", "a string", type);
    if (strcmp(type->string, "amazon-ebs") != 0)
        return error_set(EINVAL, "builders[0].type: builder '%s' is outside kiln's Packer subset "
                                 "(only amazon-ebs)",
                         type->string);
    for (size_t i = 0; i < b->n; i++) {
        const char *key = b->keys[i];
        const struct json_value *x = &b->items[i];
        _cleanup_free_ char *kp = xasprintf("%s.%s", place, key);
        bool ignored = false;

        for (size_t k = 0; k < ARRAY_SIZE(ignored_builder_keys); k++)
            if (strcmp(key, ignored_builder_keys[k]) == 0)
                ignored = true;
        if (ignored) {
            warn(t, kp, "ignored: kiln uses its own credentials and endpoint");
            continue;
        }
        if (strcmp(key, "type") == 0) {
            r = 0;
        } else if (strcmp(key, "name") == 0) {
            r = bake_get_string(x, kp, &t->name);
        } else if (strcmp(key, "region") == 0) {
            _cleanup_free_ char *region = NULL;
            r = bake_get_string(x, kp, &region);
            if (r == 0) {
                _cleanup_free_ char *w =
                    xasprintf("'%s' noted: kiln builds in the daemon's region", region);
                warn(t, kp, w);
            }
        } else if (strcmp(key, "source_ami") == 0) {
            r = bake_get_string(x, kp, &source_ami);
        } else if (strcmp(key, "source_ami_filter") == 0) {
            r = parse_source_filter(t, x, kp);
        } else if (strcmp(key, "instance_type") == 0) {
            r = bake_get_string(x, kp, &t->build.instance_type);
        } else if (strcmp(key, "ami_name") == 0) {
            r = bake_get_string(x, kp, &t->output.name);
        } else if (strcmp(key, "ami_description") == 0) {
            r = bake_get_string(x, kp, &t->output.description);
        } else if (strcmp(key, "ami_regions") == 0) {
            r = bake_get_strv(x, kp, &t->distribution.regions);
        } else if (strcmp(key, "ami_users") == 0) {
            r = bake_get_strv(x, kp, &t->distribution.user_ids);
        } else if (strcmp(key, "tags") == 0) {
            r = bake_get_kvs(x, kp, &t->output.tags);
        } else if (strcmp(key, "snapshot_tags") == 0) {
            r = bake_get_kvs(x, kp, &t->output.snapshot_tags);
        } else if (strcmp(key, "ssh_username") == 0 || strcmp(key, "communicator") == 0 ||
                   strcmp(key, "ssh_timeout") == 0) {
            r = x->type == JSON_STRING ? 0 : bake_bad_type(kp, "a string", x);
            if (r == 0)
                warn(t, kp, "noted: kiln runs steps through its agent, without SSH");
        } else {
            return outside(kp);
        }
        if (r < 0)
            return r;
    }
    if (source_ami && t->source.has_filter) {
        /* As Packer: source_ami pins the filter to that image. */
        struct bake_source *s = &t->source;
        s->filters = xrealloc(s->filters, (s->n_filters + 1) * sizeof(*s->filters));
        memset(&s->filters[s->n_filters], 0, sizeof(*s->filters));
        s->filters[s->n_filters].name = xstrdup("image-id");
        bake_strv_add(&s->filters[s->n_filters].values, source_ami);
        s->n_filters++;
    } else if (source_ami) {
        t->source.image_id = TAKE_PTR(source_ami);
    }
    if (!t->source.image_id && !t->source.has_filter)
        return error_set(EINVAL, "%s: needs source_ami or source_ami_filter", place);
    if (!t->output.name)
        return error_set(EINVAL, "%s.ami_name: required", place);
    return 0;
}

static int parse_provisioner(struct bake_template *t, const struct json_value *p, size_t idx)
{
    _cleanup_free_ char *place = xasprintf("provisioners[%zu]", idx);
    const struct json_value *type = json_get(p, "type");
    enum bake_step_type st;
    struct bake_step *s;
    int r;

    if (p->type != JSON_OBJECT)
        return bake_bad_type(place, "an object", p);
    if (!type)
        return error_set(EINVAL, "%s.type: required", place);
    if (type->type != JSON_STRING) {
        _cleanup_free_ char *tp = xasprintf("%s.type", place);
        return bake_bad_type(tp, "a string", type);
    }
    if (strcmp(type->string, "shell") == 0)
        st = BAKE_STEP_SHELL;
    else if (strcmp(type->string, "file") == 0)
        st = BAKE_STEP_FILE;
    else
        return error_set(EINVAL,
                         "%s.type: provisioner '%s' is outside kiln's Packer subset "
                         "(shell and file)",
                         place, type->string);
    s = bake_template_add_step(t, st);
    free(s->place);
    s->place = xstrdup(place);
    /* Packer's provisioners act on the running machine: a file uploaded to
     * /tmp is there for the next shell provisioner (offline, a boot's
     * tmpfiles cleanup would remove it) */
    s->executor = BAKE_EXEC_AGENT;
    for (size_t i = 0; i < p->n; i++) {
        const char *key = p->keys[i];
        const struct json_value *x = &p->items[i];
        _cleanup_free_ char *kp = xasprintf("%s.%s", place, key);
        if (strcmp(key, "type") == 0 || key[0] == '_') {
            r = 0;
        } else if (st == BAKE_STEP_SHELL && strcmp(key, "inline") == 0) {
            r = bake_get_strv(x, kp, &s->inline_cmds);
        } else if (st == BAKE_STEP_SHELL && strcmp(key, "script") == 0) {
            r = bake_get_string(x, kp, &s->script);
        } else if (st == BAKE_STEP_SHELL && strcmp(key, "scripts") == 0) {
            r = bake_get_strv(x, kp, &s->scripts);
        } else if (st == BAKE_STEP_SHELL && strcmp(key, "environment_vars") == 0) {
            if (x->type != JSON_ARRAY)
                return bake_bad_type(kp, "an array of strings", x);
            for (size_t k = 0; k < x->n; k++) {
                _cleanup_free_ char *ep = xasprintf("%s[%zu]", kp, k);
                const char *eq;
                _cleanup_free_ char *name = NULL;
                if (x->items[k].type != JSON_STRING)
                    return bake_bad_type(ep, "a string", &x->items[k]);
                eq = strchr(x->items[k].string, '=');
                if (!eq || eq == x->items[k].string)
                    return error_set(EINVAL, "%s: expected \"NAME=VALUE\"", ep);
                name = xasprintf("%.*s", (int)(eq - x->items[k].string), x->items[k].string);
                bake_kvs_add(&s->env, name, eq + 1);
            }
            r = 0;
        } else if (st == BAKE_STEP_SHELL && strcmp(key, "execute_command") == 0) {
            r = x->type == JSON_STRING ? 0 : bake_bad_type(kp, "a string", x);
            if (r == 0)
                warn(t, kp, "ignored: the agent runs scripts itself");
        } else if (st == BAKE_STEP_FILE && strcmp(key, "source") == 0) {
            r = bake_get_string(x, kp, &s->source);
        } else if (st == BAKE_STEP_FILE && strcmp(key, "destination") == 0) {
            r = bake_get_string(x, kp, &s->destination);
        } else if (st == BAKE_STEP_FILE && strcmp(key, "direction") == 0) {
            if (x->type != JSON_STRING)
                return bake_bad_type(kp, "a string", x);
            if (strcmp(x->string, "upload") != 0)
                return error_set(EINVAL, "%s: only \"upload\" is in kiln's Packer subset", kp);
            r = 0;
        } else if (strcmp(key, "max_retries") == 0) {
            if (x->type != JSON_NUMBER || !x->is_integer || x->integer < 0 || x->integer > 10)
                return error_set(EINVAL, "%s: expected an integer from 0 to 10", kp);
            s->max_retries = (unsigned)x->integer;
            r = 0;
        } else if (strcmp(key, "timeout") == 0) {
            if (x->type != JSON_STRING)
                return bake_bad_type(kp, "a string", x);
            r = bake_parse_duration(x->string, &s->timeout_s);
            if (r < 0)
                return bake_error_prefix(r, "%s", kp);
        } else {
            return outside(kp);
        }
        if (r < 0)
            return r;
    }
    /* Packer resolves relative destinations against the user's home; kiln
     * needs an absolute path (bake_step_check says so). */
    return bake_step_check(s);
}

static int parse_post_processor(struct bake_template *t, const struct json_value *p, size_t idx)
{
    _cleanup_free_ char *place = xasprintf("post-processors[%zu]", idx);
    const struct json_value *type;
    int r;

    if (p->type == JSON_STRING) {
        if (strcmp(p->string, "manifest") != 0)
            return error_set(EINVAL, "%s: post-processor '%s' is outside kiln's Packer subset "
                                     "(only manifest)",
                             place, p->string);
        if (!t->manifest.output)
            t->manifest.output = xstrdup("packer-manifest.json");
        return 0;
    }
    if (p->type == JSON_ARRAY)
        return error_set(EINVAL, "%s: post-processor chains are outside kiln's Packer subset",
                         place);
    if (p->type != JSON_OBJECT)
        return bake_bad_type(place, "a string or an object", p);
    type = json_get(p, "type");
    if (!type || type->type != JSON_STRING)
        return error_set(EINVAL, "%s.type: required (a string)", place);
    if (strcmp(type->string, "manifest") != 0)
        return error_set(EINVAL,
                         "%s.type: post-processor '%s' is outside kiln's Packer subset "
                         "(only manifest)",
                         place, type->string);
    for (size_t i = 0; i < p->n; i++) {
        const char *key = p->keys[i];
        const struct json_value *x = &p->items[i];
        _cleanup_free_ char *kp = xasprintf("%s.%s", place, key);
        if (strcmp(key, "type") == 0 || key[0] == '_') {
            r = 0;
        } else if (strcmp(key, "output") == 0) {
            r = bake_get_string(x, kp, &t->manifest.output);
        } else if (strcmp(key, "strip_path") == 0) {
            r = bake_get_bool(x, kp, &t->manifest.strip_path);
        } else if (strcmp(key, "custom_data") == 0) {
            r = bake_get_kvs(x, kp, &t->manifest.custom_data);
        } else {
            return outside(kp);
        }
        if (r < 0)
            return r;
    }
    if (!t->manifest.output)
        t->manifest.output = xstrdup("packer-manifest.json");
    return 0;
}

static int parse_variables(struct bake_template *t, const struct json_value *v,
                           const struct json_value *sensitive)
{
    if (v->type != JSON_OBJECT)
        return bake_bad_type("variables", "an object", v);
    t->variables = xcalloc(v->n ? v->n : 1, sizeof(*t->variables));
    for (size_t i = 0; i < v->n; i++) {
        struct bake_variable *var = &t->variables[t->n_variables++];
        var->name = xstrdup(v->keys[i]);
        if (v->items[i].type == JSON_NULL) {
            var->required = true; /* Packer: a null default must be set */
        } else if (v->items[i].type == JSON_STRING) {
            var->default_value = xstrdup(v->items[i].string);
        } else {
            _cleanup_free_ char *p = xasprintf("variables.%s", v->keys[i]);
            return bake_bad_type(p, "a string or null", &v->items[i]);
        }
    }
    if (!sensitive)
        return 0;
    if (sensitive->type != JSON_ARRAY)
        return bake_bad_type("sensitive-variables", "an array of strings", sensitive);
    for (size_t i = 0; i < sensitive->n; i++) {
        const struct json_value *x = &sensitive->items[i];
        bool found = false;
        if (x->type != JSON_STRING) {
            _cleanup_free_ char *p = xasprintf("sensitive-variables[%zu]", i);
            return bake_bad_type(p, "a string", x);
        }
        for (size_t k = 0; k < t->n_variables; k++)
            if (strcmp(t->variables[k].name, x->string) == 0) {
                t->variables[k].sensitive = true;
                found = true;
            }
        if (!found)
            return error_set(EINVAL, "sensitive-variables[%zu]: unknown variable '%s'", i,
                             x->string);
    }
    return 0;
}

int bake_packer_parse(const char *text, size_t len, struct bake_template **ret)
{
    _cleanup_(json_freep) struct json_value *root = NULL;
    _cleanup_(bake_template_freep) struct bake_template *t = bake_template_new();
    const struct json_value *builders, *prov, *post, *vars;
    int r;

    r = json_parse(text, len, &root);
    if (r < 0)
        return r;
    if (root->type != JSON_OBJECT)
        return error_set(EINVAL, "template: expected an object, got %s",
                         json_type_name(root->type));
    for (size_t i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        if (key[0] == '_' || strcmp(key, "variables") == 0 ||
            strcmp(key, "sensitive-variables") == 0 || strcmp(key, "builders") == 0 ||
            strcmp(key, "provisioners") == 0 || strcmp(key, "post-processors") == 0)
            continue;
        if (strcmp(key, "description") == 0) {
            r = bake_get_string(&root->items[i], key, &t->description);
            if (r < 0)
                return r;
        } else if (strcmp(key, "min_packer_version") == 0) {
            warn(t, key, "ignored");
        } else {
            return outside(key);
        }
    }
    t->schema = xstrdup("packer-legacy");
    vars = json_get(root, "variables");
    if (vars && (r = parse_variables(t, vars, json_get(root, "sensitive-variables"))) < 0)
        return r;
    if (!vars && json_get(root, "sensitive-variables"))
        return error_set(EINVAL, "sensitive-variables: no variables to mark");
    builders = json_get(root, "builders");
    if (!builders)
        return error_set(EINVAL, "builders: required");
    if (builders->type != JSON_ARRAY)
        return bake_bad_type("builders", "an array", builders);
    if (builders->n != 1)
        return error_set(EINVAL, "builders: exactly one builder (kiln's Packer subset), got %zu",
                         builders->n);
    r = parse_builder(t, &builders->items[0]);
    if (r < 0)
        return r;
    if (!t->name)
        t->name = xstrdup("amazon-ebs");
    prov = json_get(root, "provisioners");
    if (!prov)
        return error_set(EINVAL, "provisioners: required (at least one)");
    if (prov->type != JSON_ARRAY)
        return bake_bad_type("provisioners", "an array", prov);
    if (prov->n == 0 || prov->n > BAKE_TEMPLATE_MAX_STEPS)
        return error_set(EINVAL, "provisioners: from 1 to %d provisioners",
                         BAKE_TEMPLATE_MAX_STEPS);
    for (size_t i = 0; i < prov->n; i++)
        if ((r = parse_provisioner(t, &prov->items[i], i)) < 0)
            return r;
    post = json_get(root, "post-processors");
    if (post) {
        if (post->type != JSON_ARRAY)
            return bake_bad_type("post-processors", "an array", post);
        for (size_t i = 0; i < post->n; i++)
            if ((r = parse_post_processor(t, &post->items[i], i)) < 0)
                return r;
    }
    *ret = TAKE_PTR(t);
    return 0;
}
