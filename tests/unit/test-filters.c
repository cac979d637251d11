/* The shared Describe* helpers (src/api/filters.c): Filter.N parsing with
 * its refusals, wildcard matching, the tag filters (tag:KEY, tag-key) one
 * implementation serves for DescribeSnapshots and DescribeTags,
 * MaxResults/NextToken, the paged listing of DescribeSnapshots and
 * DescribeVolumes, and TagSpecification.N (tags.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/error.h"
#include "registry/registry.h"
#include "tap.h"

static const char *const known[] = { "name", "state", "tag-key", "tag:", NULL };

static struct api_ctx new_ctx(void)
{
    return (struct api_ctx){ .account = "111111111111", .action = "Test" };
}

/* Parse `s` into q and fs; returns what api_filters_parse() returned. */
static int parse(const char *s, struct api_ctx *ctx, struct query *q, struct api_filters *fs)
{
    int r;

    *ctx = new_ctx();
    *fs = (struct api_filters){ 0 };
    error_clear();
    r = query_parse(s, strlen(s), q);
    if (r < 0)
        return r;
    return api_filters_parse(ctx, q, known, fs);
}

static void test_parse_and_match(void)
{
    struct api_ctx ctx;
    struct query q;
    struct api_filters fs;

    is_int(parse("Filter.1.Name=name&Filter.1.Value.1=web-*&Filter.1.Value.2=db"
                 "&Filter.2.Name=tag:Env&Filter.2.Value.1=prod",
                 &ctx, &q, &fs),
           0, "parse two filters");
    is_int(fs.n, 2, "two filters");
    ok(api_filters_has(&fs, "name") && api_filters_has(&fs, "tag:Env"), "both are there");
    ok(!api_filters_has(&fs, "state"), "state is not");
    ok(api_filters_need_tags(&fs), "a tag filter needs tags");
    ok(api_filters_match(&fs, "name", "web-1"), "a wildcard value matches");
    ok(api_filters_match(&fs, "name", "db"), "another value matches");
    ok(!api_filters_match(&fs, "name", "dbx"), "values are whole patterns");
    ok(api_filters_match(&fs, "state", "anything"), "an absent filter does not apply");
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=state&Filter.1.Value.1=available", &ctx, &q, &fs), 0,
           "parse a filter on a field");
    ok(!api_filters_need_tags(&fs), "it needs no tags");
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=colour&Filter.1.Value.1=x", &ctx, &q, &fs), -EINVAL,
           "an unknown name is refused");
    ok(ctx.error == API_ERR_INVALID_PARAMETER_VALUE, "as InvalidParameterValue");
    ok(error_message() && strstr(error_message(), "colour"), "naming it: %s", error_message());
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=tag&Filter.1.Value.1=x", &ctx, &q, &fs), -EINVAL,
           "'tag' without a key is not 'tag:'");
    api_filters_release(&fs);
    query_release(&q);
}

static void test_tags(void)
{
    struct registry_tag tags[] = {
        { .key = (char *)"Env", .value = (char *)"prod" },
        { .key = (char *)"Name", .value = (char *)"web-1" },
    };
    struct api_ctx ctx;
    struct query q;
    struct api_filters fs;

    is_int(parse("Filter.1.Name=tag:Env&Filter.1.Value.1=pr*", &ctx, &q, &fs), 0, "tag:Env");
    ok(api_filters_match_tags(&fs, tags, 2), "tag:Env=pr* matches Env=prod");
    ok(!api_filters_match_tags(&fs, tags + 1, 1), "not a resource without Env");
    ok(!api_filters_match_tags(&fs, NULL, 0), "nor one without tags");
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=tag:Name&Filter.1.Value.1=prod", &ctx, &q, &fs), 0, "tag:Name");
    ok(!api_filters_match_tags(&fs, tags, 2), "a value of another key does not count");
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=tag-key&Filter.1.Value.1=Na*", &ctx, &q, &fs), 0, "tag-key");
    ok(api_filters_match_tags(&fs, tags, 2), "tag-key=Na* matches the key Name");
    ok(!api_filters_match_tags(&fs, tags, 1), "not Env alone");
    api_filters_release(&fs);
    query_release(&q);

    is_int(parse("Filter.1.Name=tag-key&Filter.1.Value.1=Env&Filter.2.Name=tag:Name"
                 "&Filter.2.Value.1=web-?&Filter.3.Name=name&Filter.3.Value.1=zzz",
                 &ctx, &q, &fs),
           0, "tag filters and a field filter");
    ok(api_filters_match_tags(&fs, tags, 2), "every tag filter must match; fields are not tags");
    tags[1].value = (char *)"web-10";
    ok(!api_filters_match_tags(&fs, tags, 2), "web-? does not match web-10");
    api_filters_release(&fs);
    query_release(&q);
}

static void test_paging(void)
{
    struct api_ctx ctx = new_ctx();
    struct query q;
    size_t max = 99;
    char *after = NULL, *token;

    query_parse("MaxResults=5", 12, &q);
    is_int(api_paging_parse(&ctx, &q, false, "ids", &max, &after), 0, "MaxResults=5");
    is_int(max, 5, "five");
    ok(after == NULL, "no token");
    query_release(&q);

    ctx = new_ctx();
    query_parse("MaxResults=4", 12, &q);
    is_int(api_paging_parse(&ctx, &q, false, "ids", &max, &after), -EINVAL, "MaxResults=4");
    ok(ctx.error == API_ERR_INVALID_PARAMETER_VALUE, "InvalidParameterValue");
    query_release(&q);

    ctx = new_ctx();
    query_parse("MaxResults=5", 12, &q);
    is_int(api_paging_parse(&ctx, &q, true, "ids", &max, &after), -EINVAL, "with ids");
    ok(ctx.error == API_ERR_INVALID_PARAMETER_COMBINATION, "InvalidParameterCombination");
    query_release(&q);

    token = api_token_make("00000000000000001000.snap-0123456789abcdef0");
    {
        char *s = NULL;
        ctx = new_ctx();
        s = malloc(strlen(token) + 32);
        strcpy(s, "MaxResults=5&NextToken=");
        strcat(s, token);
        query_parse(s, strlen(s), &q);
        is_int(api_paging_parse(&ctx, &q, false, "ids", &max, &after), 0, "a token of ours");
        is_str(after, "00000000000000001000.snap-0123456789abcdef0", "decodes to its key");
        free(after);
        after = NULL;
        query_release(&q);
        free(s);
    }
    free(token);

    ctx = new_ctx();
    query_parse("NextToken=zz", 12, &q);
    is_int(api_paging_parse(&ctx, &q, false, "ids", &max, &after), -EINVAL, "a foreign token");
    ok(ctx.error == API_ERR_INVALID_PAGINATION_TOKEN, "InvalidPaginationToken");
    query_release(&q);
}

/* TagSpecification.N (tags.c): each spec's tags go to its type's list, a
 * repeated key keeps the last value, and a bad spec empties every list. */
static void test_tag_specs(void)
{
    struct registry_tag *img = NULL, *snap = NULL;
    size_t n_img = 0, n_snap = 0;
    struct api_tag_target targets[] = {
        {"image", &img, &n_img},
        {"snapshot", &snap, &n_snap},
    };
    struct api_ctx ctx = new_ctx();
    struct query q;
    const char *s = "TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=a"
                    "&TagSpecification.1.Tag.1.Value=1&TagSpecification.1.Tag.2.Key=a"
                    "&TagSpecification.1.Tag.2.Value=2&TagSpecification.2.ResourceType=snapshot"
                    "&TagSpecification.2.Tag.1.Key=b";

    query_parse(s, strlen(s), &q);
    is_int(api_tag_specs_parse(&ctx, &q, targets, 2), 0, "two specs");
    is_int(n_img, 1, "a repeated key is one tag");
    ok(n_img == 1 && strcmp(img[0].key, "a") == 0 && strcmp(img[0].value, "2") == 0,
       "the last value wins");
    ok(n_snap == 1 && strcmp(snap[0].key, "b") == 0 && strcmp(snap[0].value, "") == 0,
       "an absent value is empty");
    free(img);
    free(snap);
    img = snap = NULL;
    n_img = n_snap = 0;
    query_release(&q);

    s = "TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=a"
        "&TagSpecification.2.ResourceType=volume&TagSpecification.2.Tag.1.Key=b";
    ctx = new_ctx();
    query_parse(s, strlen(s), &q);
    is_int(api_tag_specs_parse(&ctx, &q, targets, 2), -EINVAL, "a type the action does not tag");
    ok(ctx.error == API_ERR_INVALID_PARAMETER_VALUE, "InvalidParameterValue");
    ok(img == NULL && n_img == 0, "the lists are emptied");
    query_release(&q);

    s = "TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Value=x";
    ctx = new_ctx();
    query_parse(s, strlen(s), &q);
    is_int(api_tag_specs_parse(&ctx, &q, targets, 2), -EINVAL, "a tag without a key");
    ok(ctx.error == API_ERR_MISSING_PARAMETER, "MissingParameter");
    query_release(&q);

    s = "TagSpecification.1.Tag.1.Key=a";
    ctx = new_ctx();
    query_parse(s, strlen(s), &q);
    is_int(api_tag_specs_parse(&ctx, &q, targets, 2), -EINVAL, "a spec without a type");
    ok(ctx.error == API_ERR_MISSING_PARAMETER, "MissingParameter");
    query_release(&q);

    {
        char buf[4096] = "TagSpecification.1.ResourceType=image";
        for (int i = 1; i <= API_TAGS_PER_RESOURCE_MAX + 1; i++)
            snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
                     "&TagSpecification.1.Tag.%d.Key=k%d", i, i);
        ctx = new_ctx();
        query_parse(buf, strlen(buf), &q);
        ok(api_tag_specs_parse(&ctx, &q, targets, 2) < 0, "one tag too many");
        ok(ctx.error == API_ERR_TAG_LIMIT_EXCEEDED, "TagLimitExceeded");
        ok(img == NULL && n_img == 0, "nothing kept");
        query_release(&q);
    }
}

/* Paged listings: the key, `after`, a page and its token; candidates
 * that are not the caller's match tag filters as resources without tags
 * (no registry is read for them). */
static void test_candidates(void)
{
    static const char *const ids[] = {"snap-00000000000000001", "snap-00000000000000002",
                                      "snap-00000000000000003"};
    struct api_candidates cs;
    struct api_filters none = {0}, fs;
    struct api_ctx ctx;
    struct query q;
    struct xml x;
    size_t n_page = 0;
    char after[64];

    api_candidates_init(&cs, 3);
    for (int i = 0; i < 3; i++)
        is_int(api_candidates_add(&cs, NULL, &none, NULL, 1000 + i, ids[i], (void *)ids[i], false),
               1, "added");
    is_str(cs.c[0].key, "00000000000000001000.snap-00000000000000001", "the paging key");
    is_int(api_candidates_page(&cs, NULL, 2, &n_page), 0, "a page of 2");
    is_int(n_page, 2, "two on it");
    xml_init(&x);
    api_candidates_write_token(&x, &cs, n_page);
    ok(memmem(x.b.data, x.b.len, "<nextToken>", 11) != NULL, "a token: more follow");
    xml_release(&x);
    xml_init(&x);
    is_int(api_candidates_page(&cs, NULL, 0, &n_page), 0, "no MaxResults");
    is_int(n_page, 3, "everything");
    api_candidates_write_token(&x, &cs, n_page);
    ok(memmem(x.b.data, x.b.len, "nextToken", 9) == NULL, "no token on the last page");
    xml_release(&x);
    snprintf(after, sizeof(after), "%s", cs.c[1].key);
    api_candidates_release(&cs);

    api_candidates_init(&cs, 3);
    for (int i = 0; i < 3; i++)
        api_candidates_add(&cs, NULL, &none, after, 1000 + i, ids[i], (void *)ids[i], false);
    ok(cs.n == 1 && cs.c[0].row == ids[2], "only what follows `after`");
    api_candidates_release(&cs);

    is_int(parse("Filter.1.Name=tag-key&Filter.1.Value.1=*", &ctx, &q, &fs), 0, "tag-key *");
    api_candidates_init(&cs, 1);
    is_int(api_candidates_add(&cs, NULL, &fs, NULL, 1, ids[0], (void *)ids[0], false), 0,
           "another account's: no tags to match");
    is_int(cs.n, 0, "left out");
    api_candidates_release(&cs);
    api_filters_release(&fs);
    query_release(&q);
}

static void test_base64(void)
{
    uint8_t *out = NULL;
    size_t n = 99;

    is_int(api_base64_decode("aGk=", 8, &out, &n), 0, "base64 with one pad");
    ok(n == 2 && memcmp(out, "hi", 2) == 0, "decodes to its 2 bytes");
    free(out);
    out = NULL;
    is_int(api_base64_decode("aA==", 8, &out, &n), 0, "two pads");
    ok(n == 1 && out[0] == 'h', "decodes to its byte");
    free(out);
    out = NULL;
    is_int(api_base64_decode("YWJjZGVm", 6, &out, &n), 0, "no pad, exactly max");
    ok(n == 6 && memcmp(out, "abcdef", 6) == 0, "decodes to its 6 bytes");
    free(out);
    out = NULL;
    n = 99;
    is_int(api_base64_decode("", 8, &out, &n), -EMSGSIZE, "empty refused");
    is_int(api_base64_decode("aGk", 8, &out, &n), -EMSGSIZE, "a length not a multiple of 4");
    is_int(api_base64_decode("YWJjZGVmZ2g=", 6, &out, &n), -EMSGSIZE, "longer than max encodes to");
    is_int(api_base64_decode("a*k=", 8, &out, &n), -EINVAL, "not base64");
    ok(out == NULL && n == 99, "nothing written on refusal");
}

int main(void)
{
    test_parse_and_match();
    test_tags();
    test_paging();
    test_tag_specs();
    test_candidates();
    test_base64();
    return done_testing();
}
