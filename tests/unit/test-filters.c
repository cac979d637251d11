/* The shared Describe* helpers (src/api/filters.c): Filter.N parsing with
 * its refusals, wildcard matching, the tag filters (tag:KEY, tag-key) one
 * implementation serves for DescribeSnapshots and DescribeTags, and
 * MaxResults/NextToken. */
#include <errno.h>
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

int main(void)
{
    test_parse_and_match();
    test_tags();
    test_paging();
    return done_testing();
}
