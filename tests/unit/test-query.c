/* Form-encoded parameters (src/api/query.c) and the XML writer
 * (src/api/xml.c): decoding, refusals, the list accessors on the wire
 * reference's real requests, and escaping. */
#include <errno.h>
#include <string.h>

#include "api/query.h"
#include "api/xml.h"
#include "common/error.h"
#include "common/util.h"
#include "tap.h"

static int parse(const char *s, struct query *q)
{
    error_clear();
    return query_parse(s, strlen(s), q);
}

static void test_decode(void)
{
    struct query q;

    is_int(parse("a=1&b=x+y%26z%3D1&c=&d&&e=%E2%82%AC&f=%2a", &q), 0, "parse");
    is_int(q.n, 6, "six pairs, the empty one skipped");
    is_str(query_get(&q, "a"), "1", "scalar");
    is_str(query_get(&q, "b"), "x y&z=1", "'+' is a space, %%XX decoded");
    is_str(query_get(&q, "c"), "", "empty value");
    is_str(query_get(&q, "d"), "", "no '=' is an empty value");
    is_str(query_get(&q, "e"), "\xe2\x82\xac", "UTF-8 sequence");
    is_str(query_get(&q, "f"), "*", "lowercase hex");
    ok(query_get(&q, "g") == NULL, "absent key");
    is_int(query_check_unique(&q), 0, "keys unique");
    query_release(&q);

    is_int(parse("", &q), 0, "empty input");
    is_int(q.n, 0, "no pairs");
    query_release(&q);

    is_int(parse("a=%zz", &q), -EINVAL, "bad escape refused");
    ok(error_message() && strstr(error_message(), "percent escape"), "says: %s",
       error_message());
    is_int(parse("a=%4", &q), -EINVAL, "truncated escape refused");
    is_int(parse("a=%", &q), -EINVAL, "lone percent refused");
    is_int(parse("a=%C3%28", &q), -EINVAL, "invalid UTF-8 refused");
    ok(error_message() && strstr(error_message(), "UTF-8"), "says: %s", error_message());
    is_int(parse("a=%C0%AF", &q), -EINVAL, "overlong UTF-8 refused");
    is_int(parse("a=%ED%A0%80", &q), -EINVAL, "UTF-16 surrogate refused");
    is_int(parse("a=%F4%90%80%80", &q), -EINVAL, "beyond U+10FFFF refused");
    is_int(parse("a=x%00y", &q), -EINVAL, "NUL byte refused");
    is_int(parse("=x", &q), -EINVAL, "empty key refused");
    is_int(parse("a=1&a=2", &q), 0, "duplicates parse");
    is_int(query_check_unique(&q), -EINVAL, "but are found");
    query_release(&q);

    char *big = xmalloc(QUERY_MAX_KEY_SIZE + 8);
    memset(big, 'k', QUERY_MAX_KEY_SIZE + 1);
    big[QUERY_MAX_KEY_SIZE + 1] = '\0';
    is_int(parse(big, &q), -EINVAL, "over-long key refused");
    free(big);
    size_t n = (QUERY_MAX_PARAMS + 1) * 2;
    char *many = xmalloc(n + 1);
    for (size_t i = 0; i < n; i += 2)
        memcpy(many + i, "a&", 2);
    many[n] = '\0';
    is_int(parse(many, &q), -EINVAL, "more than QUERY_MAX_PARAMS refused");
    free(many);
}

static const char request1[] =
    "Action=DescribeImages&Version=2016-11-15&Owner.1=self&Owner.2=amazon&Owner.3=123456789012"
    "&ExecutableBy.1=self&Filter.1.Name=name&Filter.1.Value.1=my-%2A&Filter.1.Value.2=web+server"
    "%3F&Filter.2.Name=tag%3AEnv&Filter.2.Value.1=prod&Filter.3.Name=state&Filter.3.Value.1="
    "available&IncludeDeprecated=true&IncludeDisabled=false";

static void test_lists(void)
{
    struct query q;
    const char **v = NULL;
    struct query_item *items = NULL;
    size_t n;
    bool b;

    is_int(parse(request1, &q), 0, "the reference's DescribeImages body");
    is_int(query_get_list(&q, "Owner", &v, &n), 0, "Owner.N");
    is_int(n, 3, "three owners");
    ok(n == 3 && strcmp(v[0], "self") == 0 && strcmp(v[2], "123456789012") == 0, "in order");
    free(v);
    is_int(query_get_list(&q, "ImageId", &v, &n), 0, "absent list");
    ok(n == 0 && v == NULL, "is empty");
    is_int(query_get_structs(&q, "Filter", &items, &n), 0, "Filter.N");
    is_int(n, 3, "three filters");
    is_str(query_get(&items[0].fields, "Name"), "name", "Filter.1.Name");
    is_int(query_get_list(&items[0].fields, "Value", &v, &n), 0, "Filter.1.Value.M");
    ok(n == 2 && strcmp(v[0], "my-*") == 0 && strcmp(v[1], "web server?") == 0,
       "values decoded: '%s' '%s'", n > 0 ? v[0] : "", n > 1 ? v[1] : "");
    free(v);
    is_str(query_get(&items[1].fields, "Name"), "tag:Env", "Filter.2.Name");
    is_int(items[2].index, 3, "index kept");
    query_items_free(items, 3);
    is_int(query_parse_bool(query_get(&q, "IncludeDeprecated"), &b), 0, "bool");
    ok(b, "true");
    is_int(query_parse_bool("True", &b), -EINVAL, "only lowercase booleans");
    query_release(&q);

    is_int(parse("Id.10=j&Id.2=b&Id.1=a&Idx.1=no&Id.Foo=no", &q), 0, "gaps");
    is_int(query_get_list(&q, "Id", &v, &n), 0, "list with a gap");
    ok(n == 3 && strcmp(v[0], "a") == 0 && strcmp(v[1], "b") == 0 && strcmp(v[2], "j") == 0,
       "numeric order, not text order");
    free(v);
    query_release(&q);

    is_int(parse("Id.0=a", &q), 0, "index 0 parses");
    is_int(query_get_list(&q, "Id", &v, &n), -EINVAL, "but is refused as a list entry");
    query_release(&q);
    is_int(parse("Id.01=a", &q), 0, "leading zero parses");
    is_int(query_get_list(&q, "Id", &v, &n), -EINVAL, "but is refused");
    query_release(&q);
    is_int(parse("Id.1x=a", &q), 0, "junk after index");
    is_int(query_get_list(&q, "Id", &v, &n), -EINVAL, "refused");
    query_release(&q);
    is_int(parse("Id.1234567890=a", &q), 0, "huge index");
    is_int(query_get_list(&q, "Id", &v, &n), -EINVAL, "refused");
    query_release(&q);

    struct strbuf big = { 0 };
    for (int i = 1; i <= QUERY_MAX_LIST + 1; i++)
        strbuf_printf(&big, "%sId.%d=x", i > 1 ? "&" : "", i);
    is_int(query_parse(big.data, big.len, &q), 0, "1001 entries parse");
    is_int(query_get_list(&q, "Id", &v, &n), -EINVAL, "but exceed the list cap");
    query_release(&q);
    strbuf_release(&big);

    /* Nested structures: TagSpecification.N.Tag.M.Key */
    is_int(parse("TagSpecification.2.ResourceType=snapshot&TagSpecification.1.ResourceType=image&"
                 "TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=x+y%26z%3D1&"
                 "TagSpecification.2.Tag.1.Key=k&TagSpecification.2.Tag.1.Value=v", &q),
           0, "RegisterImage TagSpecification");
    is_int(query_get_structs(&q, "TagSpecification", &items, &n), 0, "structs");
    is_int(n, 2, "two");
    is_str(query_get(&items[0].fields, "ResourceType"), "image", "sorted by index");
    struct query_item *tags = NULL;
    size_t nt;
    is_int(query_get_structs(&items[0].fields, "Tag", &tags, &nt), 0, "nested");
    ok(nt == 1 && strcmp(query_get(&tags[0].fields, "Value"), "x y&z=1") == 0, "nested value");
    query_items_free(tags, nt);
    query_items_free(items, n);
    query_release(&q);
}

static void test_xml(void)
{
    struct xml x;
    char *doc;

    xml_init(&x);
    xml_ec2_begin(&x, "DescribeRegionsResponse", "rid-1");
    xml_open(&x, "regionInfo");
    xml_open(&x, "item");
    xml_element(&x, "regionName", "a&b<c>\"d\"\te\x01\xff" "\xe2\x82\xac");
    xml_element_bool(&x, "ok", true);
    xml_element_int(&x, "n", -5);
    xml_element(&x, "absent", NULL);
    xml_close(&x);
    xml_close(&x);
    xml_close(&x);
    doc = xml_steal(&x, NULL);
    is_str(doc,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<DescribeRegionsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
           "<requestId>rid-1</requestId><regionInfo><item><regionName>a&amp;b&lt;c&gt;&quot;d"
           "&quot;&#9;e\xef\xbf\xbd\xef\xbf\xbd\xe2\x82\xac</regionName><ok>true</ok><n>-5</n>"
           "</item></regionInfo></DescribeRegionsResponse>",
           "success envelope, escaping, control and invalid bytes replaced");
    free(doc);
    xml_release(&x);

    xml_init(&x);
    xml_ec2_error(&x, "InvalidAMIID.NotFound", "The image id '[ami-1]' does not exist", "r2");
    doc = xml_steal(&x, NULL);
    is_str(doc,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id "
           "'[ami-1]' does not exist</Message></Error></Errors><RequestID>r2</RequestID>"
           "</Response>",
           "error envelope");
    free(doc);
    xml_release(&x);
}

int main(void)
{
    test_decode();
    test_lists();
    test_xml();
    return done_testing();
}
