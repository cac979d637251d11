/* Fuzz target for the permission-change parser (src/api/permissions.c):
 * the bytes are a form-encoded query; both request forms, for both
 * attributes, either refuse it with an error recorded for the client or
 * yield changes that are each a user with a 12-digit account or the group
 * "all", no more than the form's maximum, with adds/removes flags that
 * agree with them. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "api/query.h"
#include "common/error.h"
#include "fuzz.h"

static const struct api_permission_form forms[] = {
    { .param = "LaunchPermission", .attribute = "launchPermission", .organizations = true },
    { .param = "CreateVolumePermission", .attribute = "createVolumePermission", .max = 500 },
};

static void check(const struct api_permission_changes *c, const struct api_permission_form *f)
{
    bool adds = false, removes = false;

    if (f->max && c->n > f->max)
        abort();
    for (size_t i = 0; i < c->n; i++) {
        const struct api_permission_change *p = &c->v[i];
        if (p->kind == REGISTRY_PERMISSION_GROUP) {
            if (strcmp(p->value, "all") != 0)
                abort();
        } else if (p->kind != REGISTRY_PERMISSION_USER || strlen(p->value) != 12 ||
                   strspn(p->value, "0123456789") != 12) {
            abort();
        }
        adds |= p->add;
        removes |= !p->add;
    }
    if (adds != c->adds || removes != c->removes)
        abort();
}

static void run(const struct query *q, const struct api_permission_form *f, bool structured)
{
    struct api_ctx ctx = { .account = "111111111111", .action = "Fuzz" };
    struct api_permission_changes c = { 0 };
    int r;

    error_clear();
    r = structured ? api_permission_parse_structured(&ctx, q, f, &c)
                   : api_permission_parse_legacy(&ctx, q, f, &c);
    if (r < 0) {
        if (!error_message())
            abort(); /* every refusal says why */
    } else {
        if (r != 0)
            abort();
        check(&c, f);
        if (structured && !api_permission_form_used(q, f) && c.n)
            abort(); /* changes only from the form's own parameters */
    }
    api_permission_changes_release(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct query q;

    error_clear();
    if (query_parse((const char *)data, size, &q) < 0)
        return 0;
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        run(&q, &forms[i], true);
        run(&q, &forms[i], false);
    }
    query_release(&q);
    return 0;
}
