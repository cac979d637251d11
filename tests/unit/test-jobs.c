/* Jobs and client tokens (registry/jobs.h) on an in-memory registry: a job
 * and its items round-trip; bad values are -EINVAL and insert nothing (not
 * even a partial job); a duplicate id is -EEXIST; the list is oldest
 * first; the source maps are distinct and per source region; delete
 * removes the items too and a second delete is -ENOENT; a client token is
 * -ENOENT until recorded, reads back, and a second record of the same
 * (account, token) is -EEXIST while another account may use it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry/jobs.h"
#include "registry/registry.h"
#include "tap.h"

#define OWNER "111111111111"
#define BOB "222222222222"

static struct digest map_of(int n)
{
    struct digest d;

    memset(&d, 0, sizeof(d));
    d.b[0] = (uint8_t)n;
    d.b[31] = 0xaa;
    return d;
}

static void make_job(struct registry_job *j, struct registry_job_item *items, size_t n,
                     const char *id, const char *region, int64_t created)
{
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->kind = strncmp(id, "ami-", 4) == 0 ? JOB_COPY_IMAGE : JOB_COPY_SNAPSHOT;
    snprintf(j->owner, sizeof(j->owner), OWNER);
    snprintf(j->source_region, sizeof(j->source_region), "%s", region);
    snprintf(j->source_id, sizeof(j->source_id), "%s",
             j->kind == JOB_COPY_IMAGE ? "ami-0000000000000000f" : "snap-0000000000000000f");
    j->created = created;
    for (size_t i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof(items[i]));
        snprintf(items[i].source_snapshot_id, ID_MAX_SIZE, "snap-0000000000000001%zu", i);
        snprintf(items[i].target_snapshot_id, ID_MAX_SIZE, "snap-0000000000000002%zu", i);
        items[i].source_map_id = map_of((int)(i % 2)); /* two items share a map */
    }
    j->items = items;
    j->n_items = n;
}

static size_t count_jobs(struct registry *reg)
{
    struct registry_job **list = NULL;
    size_t n = 0;

    if (registry_job_list(reg, &list, &n) < 0)
        return (size_t)-1;
    registry_job_list_free(list, n);
    return n;
}

int main(void)
{
    struct registry *reg = NULL;
    struct registry_job j, *got = NULL, **list = NULL;
    struct registry_job_item items[3];
    struct digest *maps = NULL;
    size_t n = 0;
    int e;

    ok(registry_open(":memory:", &reg) == 0, "opened an in-memory registry");

    make_job(&j, items, 3, "ami-0123456789abcdef0", "us-east-1", 2000);
    is_int(registry_job_insert(reg, &j), 0, "inserted an image copy job with 3 items");
    e = registry_job_get(reg, "ami-0123456789abcdef0", &got);
    is_int(e, 0, "read it back");
    if (e == 0) {
        is_int(got->kind, JOB_COPY_IMAGE, "kind");
        is_str(got->owner, OWNER, "owner");
        is_str(got->source_region, "us-east-1", "source region");
        is_str(got->source_id, "ami-0000000000000000f", "source id");
        is_int(got->created, 2000, "created");
        is_int(got->n_items, 3, "three items");
        ok(got->n_items == 3 && memcmp(got->items, items, sizeof(items)) == 0,
           "items in order, as inserted");
    }
    registry_job_free(got);
    got = NULL;
    is_int(registry_job_insert(reg, &j), -EEXIST, "the same id again is -EEXIST");

    /* Bad values: nothing inserted. */
    make_job(&j, items, 2, "snap-0123456789abcdef1", "us-west-2", 1000);
    snprintf(items[1].target_snapshot_id, ID_MAX_SIZE, "snap-nothex");
    is_int(registry_job_insert(reg, &j), -EINVAL, "a malformed item is -EINVAL");
    is_int(registry_job_get(reg, "snap-0123456789abcdef1", &got), -ENOENT,
           "and nothing of the job was inserted");
    make_job(&j, items, 0, "snap-0123456789abcdef1", "us-west-2", 1000);
    is_int(registry_job_insert(reg, &j), -EINVAL, "a job without items is -EINVAL");
    make_job(&j, items, 1, "snap-0123456789abcdef1", "", 1000);
    is_int(registry_job_insert(reg, &j), -EINVAL, "an empty source region is -EINVAL");
    make_job(&j, items, 1, "snap-0123456789abcdef1", "us-west-2", 1000);
    snprintf(j.owner, sizeof(j.owner), "12345");
    is_int(registry_job_insert(reg, &j), -EINVAL, "a malformed owner is -EINVAL");
    make_job(&j, items, 1, "ami-0123456789abcdef1", "us-west-2", 1000);
    j.kind = JOB_COPY_SNAPSHOT;
    is_int(registry_job_insert(reg, &j), -EINVAL, "a snapshot job with an ami- id is -EINVAL");

    /* A snapshot copy from another region, older. */
    make_job(&j, items, 1, "snap-0123456789abcdef1", "us-west-2", 1000);
    is_int(registry_job_insert(reg, &j), 0, "inserted a snapshot copy job");
    e = registry_job_list(reg, &list, &n);
    ok(e == 0 && n == 2 && strcmp(list[0]->id, "snap-0123456789abcdef1") == 0 &&
           list[1]->n_items == 3,
       "the list is oldest first, with items");
    registry_job_list_free(list, n);

    e = registry_job_source_maps(reg, "us-east-1", &maps, &n);
    ok(e == 0 && n == 2, "us-east-1 jobs read two distinct maps (%zu)", n);
    free(maps);
    maps = NULL;
    e = registry_job_source_maps(reg, "us-west-2", &maps, &n);
    ok(e == 0 && n == 1, "us-west-2 jobs read one map");
    free(maps);
    maps = NULL;
    e = registry_job_source_maps(reg, "eu-north-1", &maps, &n);
    ok(e == 0 && n == 0, "no job reads from eu-north-1");
    free(maps);
    maps = NULL;

    is_int(registry_job_delete(reg, "ami-0123456789abcdef0"), 0, "deleted the image job");
    is_int(registry_job_delete(reg, "ami-0123456789abcdef0"), -ENOENT, "twice is -ENOENT");
    e = registry_job_source_maps(reg, "us-east-1", &maps, &n);
    ok(e == 0 && n == 0, "its items went with it");
    free(maps);
    is_int(count_jobs(reg), 1, "one job left");

    /* A job insert inside a rolled-back transaction leaves nothing. */
    make_job(&j, items, 1, "snap-0123456789abcdef2", "us-west-2", 3000);
    ok(registry_begin(reg) == 0 && registry_job_insert(reg, &j) == 0 &&
           registry_rollback(reg) == 0,
       "inserted a job and rolled back");
    is_int(count_jobs(reg), 1, "the rolled-back job is not there");

    /* Client tokens. */
    {
        struct registry_client_token t = { .created = 5 }, back;
        snprintf(t.action, sizeof(t.action), "CopyImage");
        snprintf(t.resource_id, sizeof(t.resource_id), "ami-0123456789abcdef0");
        t.params = map_of(7);

        ok(client_token_is_valid("a"), "a one-character token is valid");
        ok(!client_token_is_valid(""), "an empty token is not");
        ok(!client_token_is_valid("tab\there"), "a control character is not");
        {
            char long_token[80];
            memset(long_token, 'x', 64);
            long_token[64] = '\0';
            ok(client_token_is_valid(long_token), "64 characters are valid");
            long_token[64] = 'x';
            long_token[65] = '\0';
            ok(!client_token_is_valid(long_token), "65 are not");
        }
        is_int(registry_client_token_get(reg, OWNER, "tok-1", &back), -ENOENT,
               "an unknown token is -ENOENT");
        is_int(registry_client_token_insert(reg, OWNER, "tok-1", &t), 0, "recorded a token");
        e = registry_client_token_get(reg, OWNER, "tok-1", &back);
        ok(e == 0 && strcmp(back.action, "CopyImage") == 0 &&
               strcmp(back.resource_id, "ami-0123456789abcdef0") == 0 &&
               digest_equal(&back.params, &t.params) && back.created == 5,
           "it reads back");
        is_int(registry_client_token_insert(reg, OWNER, "tok-1", &t), -EEXIST,
               "the same account and token again is -EEXIST");
        is_int(registry_client_token_insert(reg, BOB, "tok-1", &t), 0,
               "another account may use the same token");
        is_int(registry_client_token_insert(reg, "nope", "tok-2", &t), -EINVAL,
               "a malformed account is -EINVAL");
        is_int(registry_client_token_get(reg, OWNER, "", &back), -EINVAL,
               "an empty token is -EINVAL");
    }

    registry_free(reg);
    return done_testing();
}
