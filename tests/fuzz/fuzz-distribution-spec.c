/* Fuzz target for the reader of bake distribution specs
 * (bake_distribution_spec_parse() in src/bake/distribute.c), which reads
 * the JSON a build row keeps: any bytes are either refused with -EBADMSG
 * and a message, or read into a spec whose JSON, written by
 * bake_distribution_spec_write(), reads back to the same spec (and writes
 * the same text again). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bake/distribute.h"
#include "common/error.h"
#include "fuzz.h"
#include "registry/registry.h"

static bool same_tags(const struct registry_tag *a, const struct registry_tag *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].key, b[i].key) != 0 || strcmp(a[i].value, b[i].value) != 0)
            return false;
    return true;
}

static bool same(const struct bake_distribution_spec *a, const struct bake_distribution_spec *b)
{
    if (a->n_user_ids != b->n_user_ids || a->is_public != b->is_public ||
        a->deprecate_at != b->deprecate_at || a->deprecate_after_s != b->deprecate_after_s ||
        a->n_tags != b->n_tags || a->n_snapshot_tags != b->n_snapshot_tags)
        return false;
    for (size_t i = 0; i < a->n_user_ids; i++)
        if (strcmp(a->user_ids[i], b->user_ids[i]) != 0)
            return false;
    return same_tags(a->tags, b->tags, a->n_tags) &&
           same_tags(a->snapshot_tags, b->snapshot_tags, a->n_snapshot_tags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bake_distribution_spec s = {0}, s2 = {0};
    char *copy = malloc(size ? size : 1), *text = NULL, *text2 = NULL;
    int r;

    if (!copy)
        return 0;
    memcpy(copy, data, size); /* exact size, not terminated: ASan sees an overread */
    error_clear();
    r = bake_distribution_spec_parse(copy, size, &s);
    if (r < 0) {
        if (r != -EBADMSG || !error_message())
            abort(); /* every refusal is EBADMSG and says why */
        free(copy);
        return 0;
    }
    if (bake_distribution_spec_write(&s, &text) < 0)
        abort(); /* what was read fits */
    if (bake_distribution_spec_parse(text, strlen(text), &s2) < 0 || !same(&s, &s2))
        abort();
    if (bake_distribution_spec_write(&s2, &text2) < 0 || strcmp(text, text2) != 0)
        abort();
    bake_distribution_spec_release(&s);
    bake_distribution_spec_release(&s2);
    free(text);
    free(text2);
    free(copy);
    return 0;
}
