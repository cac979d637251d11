/* Fuzz target for bake templates (src/bake/template.c, packer.c, interp.c):
 * any bytes either parse, as a native template or as a Packer template,
 * into a template whose variables resolve and whose strings expand or are
 * refused with a message, or are refused with a message.  Masking any
 * expanded string never leaves a registered secret in it. */
#include <stdlib.h>
#include <string.h>

#include "bake/interp.h"
#include "bake/packer.h"
#include "bake/template.h"
#include "common/error.h"
#include "fuzz.h"

static void must_say_why(int r)
{
    if (r < 0 && !error_message())
        abort(); /* every refusal says why */
}

static void exercise(struct bake_template *t)
{
    struct bake_interp *ip = bake_interp_new(1764230000);
    int r;

    error_clear();
    r = bake_template_resolve_variables(t, ip);
    if (r == 0)
        r = bake_template_expand_source(t, ip);
    bake_interp_set_field(ip, "SourceAMI", "ami-0123456789abcdef0");
    bake_interp_set_field(ip, "SourceAMIName", "debian");
    if (r == 0)
        r = bake_template_expand(t, ip);
    must_say_why(r);
    for (size_t i = 0; r == 0 && i < t->n_steps; i++) {
        const struct bake_step *s = &t->steps[i];
        for (size_t k = 0; k < t->n_variables; k++) {
            const char *v = bake_interp_var(ip, t->variables[k].name);
            char *m;
            if (!t->variables[k].sensitive || !v || strlen(v) < 2 || strpbrk(v, "<>sensitv"))
                continue;
            m = bake_interp_mask(ip, s->content ? s->content : s->name);
            if (strstr(m, v))
                abort();
            free(m);
        }
    }
    bake_interp_free(ip);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bake_template *t = NULL;
    int r;

    error_clear();
    r = bake_template_parse((const char *)data, size, &t);
    must_say_why(r);
    if (r == 0) {
        exercise(t);
        bake_template_free(t);
    }
    t = NULL;
    error_clear();
    r = bake_packer_parse((const char *)data, size, &t);
    must_say_why(r);
    if (r == 0) {
        exercise(t);
        bake_template_free(t);
    }
    return 0;
}
