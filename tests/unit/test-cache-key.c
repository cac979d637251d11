/* Layer cache keys (bake/cache-key.h).
 *
 * Checked: a step's key does not depend on the order of its map keys (the
 * template's key order and whitespace are gone once parsed into a tree);
 * it changes with any value, with the previous key, with the environment,
 * with one byte of an input file, with an input's mode, with a file added
 * to an input directory, with a symlink's target and with the order of the
 * inputs; it does not change with the ignored fields (name, timeout...) nor
 * with a file's times; a sensitive value enters as an HMAC (the value
 * changes the key, the secret too, and it is refused without a secret);
 * duplicate keys, missing inputs and FIFOs are refused with a message
 * naming the place; the per-data-dir secret is created once (0600) and read
 * back the same, and a secret file of the wrong size is -EBADMSG; steps
 * given as JSON text convert to trees whose keys ignore whitespace and key
 * order, and a fraction is refused naming its place.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "bake/cache-key.h"
#include "common/error.h"
#include "common/json.h"
#include "tap.h"

static char dir[256];

static void write_file(const char *rel, const char *content, mode_t mode)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    chmod(path, mode);
}

#define STR(s)                                                                                     \
    {                                                                                              \
        .type = BAKE_VALUE_STRING, .string = (s), .len = sizeof(s) - 1                             \
    }

/* A step { "type": "file", "source": src, "destination": "/etc/motd",
 * "mode": 420, "name": name } with the keys in the order `order`. */
static int step_key(const struct digest *prev, const char *src, const char *name,
                    const int order[5], const char *const *inputs, size_t n_inputs,
                    struct digest *ret)
{
    const char *all_keys[5] = {"type", "source", "destination", "mode", "name"};
    struct bake_value all_values[5] = {
        STR("file"),
        {.type = BAKE_VALUE_STRING, .string = src, .len = strlen(src)},
        STR("/etc/motd"),
        {.type = BAKE_VALUE_INT, .integer = 0644},
        {.type = BAKE_VALUE_STRING, .string = name, .len = strlen(name)},
    };
    const char *keys[5];
    struct bake_value values[5];
    struct bake_value step = {.type = BAKE_VALUE_MAP, .len = 5, .keys = keys, .items = values};

    for (int i = 0; i < 5; i++) {
        keys[i] = all_keys[order[i]];
        values[i] = all_values[order[i]];
    }
    return bake_cache_key_step(prev, &step, NULL, dir, inputs, n_inputs, NULL, ret);
}

static const int order_a[5] = {0, 1, 2, 3, 4};
static const int order_b[5] = {4, 3, 2, 1, 0};
static const int order_c[5] = {2, 0, 4, 1, 3};

static void test_order_and_values(void)
{
    struct digest root, k0, ka, kb, kc, k;
    const char *in[] = {"motd"};

    memset(&root, 7, sizeof(root));
    bake_cache_key_base(&root, &k0);
    write_file("motd", "hello\n", 0644);
    is_int(step_key(&k0, "motd", "one", order_a, in, 1, &ka), 0, "key of a step");
    is_int(step_key(&k0, "motd", "one", order_b, in, 1, &kb), 0, "same step, keys reversed");
    is_int(step_key(&k0, "motd", "one", order_c, in, 1, &kc), 0, "same step, keys shuffled");
    ok(digest_equal(&ka, &kb) && digest_equal(&ka, &kc), "key order does not matter");
    is_int(step_key(&k0, "motd", "two", order_a, in, 1, &k), 0, "another name");
    ok(digest_equal(&ka, &k), "the name is not part of the key");
    is_int(step_key(&ka, "motd", "one", order_a, in, 1, &k), 0, "another previous key");
    ok(!digest_equal(&ka, &k), "the previous key is part of the key");
    root.b[31] ^= 1;
    bake_cache_key_base(&root, &k);
    ok(!digest_equal(&k0, &k), "K_0 changes with the source block map id");

    /* The environment. */
    {
        const char *ek[] = {"arch"};
        struct bake_value ev[] = {STR("x86_64")}, ev2[] = {STR("aarch64")};
        struct bake_value env = {.type = BAKE_VALUE_MAP, .len = 1, .keys = ek, .items = ev};
        struct bake_value env2 = {.type = BAKE_VALUE_MAP, .len = 1, .keys = ek, .items = ev2};
        struct bake_value step = STR("x");
        struct digest e1, e2;
        is_int(bake_cache_key_step(&k0, &step, &env, dir, NULL, 0, NULL, &e1), 0, "env 1");
        is_int(bake_cache_key_step(&k0, &step, &env2, dir, NULL, 0, NULL, &e2), 0, "env 2");
        ok(!digest_equal(&e1, &e2), "the environment is part of the key");
    }

    /* Nested values: a list's order counts; int and string differ. */
    {
        struct bake_value l1[] = {STR("a"), STR("b")}, l2[] = {STR("b"), STR("a")};
        struct bake_value s1 = {.type = BAKE_VALUE_LIST, .len = 2, .items = l1};
        struct bake_value s2 = {.type = BAKE_VALUE_LIST, .len = 2, .items = l2};
        struct bake_value i1 = {.type = BAKE_VALUE_INT, .integer = 1}, t1 = STR("1");
        struct bake_value b1 = {.type = BAKE_VALUE_BOOL, .boolean = true};
        struct bake_value n1 = {.type = BAKE_VALUE_NULL};
        struct digest d1, d2, d3, d4;
        bake_cache_key_step(&k0, &s1, NULL, dir, NULL, 0, NULL, &d1);
        bake_cache_key_step(&k0, &s2, NULL, dir, NULL, 0, NULL, &d2);
        ok(!digest_equal(&d1, &d2), "a list's order is part of the key");
        bake_cache_key_step(&k0, &i1, NULL, dir, NULL, 0, NULL, &d1);
        bake_cache_key_step(&k0, &t1, NULL, dir, NULL, 0, NULL, &d2);
        bake_cache_key_step(&k0, &b1, NULL, dir, NULL, 0, NULL, &d3);
        bake_cache_key_step(&k0, &n1, NULL, dir, NULL, 0, NULL, &d4);
        ok(!digest_equal(&d1, &d2) && !digest_equal(&d1, &d3) && !digest_equal(&d3, &d4),
           "1, \"1\", true and null all differ");
        /* Ignored fields are ignored at the top only. */
        {
            const char *k1[] = {"inline", "timeout"}, *k2[] = {"inline"};
            struct bake_value v1[] = {STR("x"), STR("5m")}, v2[] = {STR("x")};
            struct bake_value m1 = {.type = BAKE_VALUE_MAP, .len = 2, .keys = k1, .items = v1};
            struct bake_value m2 = {.type = BAKE_VALUE_MAP, .len = 1, .keys = k2, .items = v2};
            struct bake_value w1 = {.type = BAKE_VALUE_LIST, .len = 1, .items = &m1};
            struct bake_value w2 = {.type = BAKE_VALUE_LIST, .len = 1, .items = &m2};
            bake_cache_key_step(&k0, &m1, NULL, dir, NULL, 0, NULL, &d1);
            bake_cache_key_step(&k0, &m2, NULL, dir, NULL, 0, NULL, &d2);
            ok(digest_equal(&d1, &d2), "a step's timeout is not part of the key");
            bake_cache_key_step(&k0, &w1, NULL, dir, NULL, 0, NULL, &d1);
            bake_cache_key_step(&k0, &w2, NULL, dir, NULL, 0, NULL, &d2);
            ok(!digest_equal(&d1, &d2), "a nested field named timeout is");
        }
    }

    /* Duplicate keys. */
    {
        const char *dk[] = {"a", "b", "a"};
        struct bake_value dv[] = {STR("1"), STR("2"), STR("3")};
        struct bake_value inner = {.type = BAKE_VALUE_MAP, .len = 3, .keys = dk, .items = dv};
        const char *ok_keys[] = {"env"};
        struct bake_value outer = {
            .type = BAKE_VALUE_MAP, .len = 1, .keys = ok_keys, .items = &inner};
        int r = bake_cache_key_step(&k0, &outer, NULL, dir, NULL, 0, NULL, &k);
        is_int(r, -EINVAL, "a duplicate key is refused");
        ok(error_message() && strstr(error_message(), "step.env") && strstr(error_message(), "'a'"),
           "the message names the place and the key: %s", error_message());
    }
}

static void test_inputs(void)
{
    struct digest k0, base, k;
    const char *one[] = {"motd"};
    const char *dir_in[] = {"tree"};
    const char *two[] = {"motd", "other"}, *two_rev[] = {"other", "motd"};
    char path[512];
    struct timeval tv[2] = {{1000000, 0}, {1000000, 0}};

    memset(&k0, 1, sizeof(k0));
    write_file("motd", "hello\n", 0644);
    write_file("other", "x", 0644);
    step_key(&k0, "motd", "n", order_a, one, 1, &base);

    write_file("motd", "hellp\n", 0644);
    step_key(&k0, "motd", "n", order_a, one, 1, &k);
    ok(!digest_equal(&base, &k), "one byte of content changes the key");
    write_file("motd", "hello\n", 0644);
    step_key(&k0, "motd", "n", order_a, one, 1, &k);
    ok(digest_equal(&base, &k), "the same content gives the same key again");
    snprintf(path, sizeof(path), "%s/motd", dir);
    utimes(path, tv);
    step_key(&k0, "motd", "n", order_a, one, 1, &k);
    ok(digest_equal(&base, &k), "times do not count");
    chmod(path, 0755);
    step_key(&k0, "motd", "n", order_a, one, 1, &k);
    ok(!digest_equal(&base, &k), "the mode changes the key");
    chmod(path, 0644);

    {
        struct digest a, b;
        is_int(step_key(&k0, "motd", "n", order_a, two, 2, &a), 0, "two inputs");
        step_key(&k0, "motd", "n", order_a, two_rev, 2, &b);
        ok(!digest_equal(&a, &b), "the order of the inputs counts");
    }

    /* A directory: entries in sorted order, whatever readdir gives. */
    snprintf(path, sizeof(path), "%s/tree", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/tree/sub", dir);
    mkdir(path, 0755);
    write_file("tree/b", "bee", 0644);
    write_file("tree/a", "ay", 0600);
    write_file("tree/sub/c", "see", 0644);
    {
        struct digest d1, d2;
        is_int(step_key(&k0, "tree", "n", order_a, dir_in, 1, &d1), 0, "a directory input");
        /* Recreate the same tree in another creation order. */
        snprintf(path, sizeof(path), "rm -rf '%s/tree'", dir);
        if (system(path) != 0)
            ok(0, "rm");
        snprintf(path, sizeof(path), "%s/tree", dir);
        mkdir(path, 0755);
        snprintf(path, sizeof(path), "%s/tree/sub", dir);
        mkdir(path, 0755);
        write_file("tree/sub/c", "see", 0644);
        write_file("tree/a", "ay", 0600);
        write_file("tree/b", "bee", 0644);
        step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
        ok(digest_equal(&d1, &d2), "the same tree made in another order has the same key");
        write_file("tree/sub/d", "", 0644);
        step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
        ok(!digest_equal(&d1, &d2), "an added empty file changes the key");
        snprintf(path, sizeof(path), "%s/tree/sub/d", dir);
        unlink(path);
        step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
        ok(digest_equal(&d1, &d2), "removing it restores the key");
        snprintf(path, sizeof(path), "%s/tree/sub", dir);
        chmod(path, 0700);
        step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
        ok(!digest_equal(&d1, &d2), "a directory's mode changes the key");
        chmod(path, 0755);
        snprintf(path, sizeof(path), "%s/tree/link", dir);
        if (symlink("a", path) == 0) {
            struct digest d3;
            step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
            unlink(path);
            if (symlink("b", path) != 0)
                ok(0, "symlink");
            step_key(&k0, "tree", "n", order_a, dir_in, 1, &d3);
            ok(!digest_equal(&d1, &d2) && !digest_equal(&d2, &d3),
               "a symlink counts, by its target");
            unlink(path);
        }
        /* Rename a file: same content, other name. */
        {
            char from[512], to[512];
            snprintf(from, sizeof(from), "%s/tree/b", dir);
            snprintf(to, sizeof(to), "%s/tree/bb", dir);
            if (rename(from, to) == 0) {
                step_key(&k0, "tree", "n", order_a, dir_in, 1, &d2);
                ok(!digest_equal(&d1, &d2), "a file's name counts");
                if (rename(to, from) != 0)
                    ok(0, "rename back");
            }
        }
    }

    /* Bad inputs. */
    {
        const char *missing[] = {"nope"}, *fifo[] = {"pipe"}, *empty[] = {""};
        snprintf(path, sizeof(path), "%s/pipe", dir);
        mkfifo(path, 0644);
        is_int(step_key(&k0, "x", "n", order_a, missing, 1, &k), -ENOENT,
               "a missing input is -ENOENT");
        ok(error_message() && strstr(error_message(), "nope"), "naming it: %s", error_message());
        is_int(step_key(&k0, "x", "n", order_a, fifo, 1, &k), -EINVAL, "a FIFO is refused");
        ok(error_message() && strstr(error_message(), "pipe"), "naming it: %s", error_message());
        is_int(step_key(&k0, "x", "n", order_a, empty, 1, &k), -EINVAL, "an empty path is refused");
        unlink(path);
    }
}

static void test_sensitive(void)
{
    struct bake_cache_secret s1, s2, again;
    struct digest k0, a, b, c, d;
    char path[512], path2[512];
    struct stat st;
    struct bake_value v = {
        .type = BAKE_VALUE_STRING, .string = "hunter2", .len = 7, .sensitive = true};
    struct bake_value w = {
        .type = BAKE_VALUE_STRING, .string = "hunter3", .len = 7, .sensitive = true};
    struct bake_value plain = STR("hunter2");

    memset(&k0, 3, sizeof(k0));
    snprintf(path, sizeof(path), "%s/bake.secret", dir);
    snprintf(path2, sizeof(path2), "%s/other.secret", dir);
    is_int(bake_cache_secret_load(path, &s1), 0, "create the secret");
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 32,
       "it is 32 bytes, mode 0600");
    is_int(bake_cache_secret_load(path, &again), 0, "read it back");
    ok(memcmp(s1.b, again.b, 32) == 0, "the same secret");
    is_int(bake_cache_secret_load(path2, &s2), 0, "another data dir's secret");
    ok(memcmp(s1.b, s2.b, 32) != 0, "differs");

    is_int(bake_cache_key_step(&k0, &v, NULL, dir, NULL, 0, NULL, &a), -EINVAL,
           "a sensitive value needs a secret");
    ok(error_message() && strstr(error_message(), "'step'"), "the message names it: %s",
       error_message());
    is_int(bake_cache_key_step(&k0, &v, NULL, dir, NULL, 0, &s1, &a), 0, "sensitive key");
    bake_cache_key_step(&k0, &w, NULL, dir, NULL, 0, &s1, &b);
    bake_cache_key_step(&k0, &v, NULL, dir, NULL, 0, &s2, &c);
    bake_cache_key_step(&k0, &plain, NULL, dir, NULL, 0, &s1, &d);
    ok(!digest_equal(&a, &b), "a changed sensitive value changes the key");
    ok(!digest_equal(&a, &c), "another secret gives another key");
    ok(!digest_equal(&a, &d), "a sensitive value does not hash like its plain text");

    {
        FILE *f = fopen(path2, "w");
        if (f) {
            fputs("short", f);
            fclose(f);
        }
        is_int(bake_cache_secret_load(path2, &s2), -EBADMSG, "a secret of the wrong size");
    }
}

/* Steps that arrive as JSON text: whitespace and key order do not count. */
static void test_json(void)
{
    static const char a[] = "{\"type\":\"shell\",\"inline\":[\"apt-get update\",\"true\"],"
                            "\"env\":{\"A\":\"1\",\"B\":2},\"name\":\"x\"}";
    static const char b[] = "{\n  \"env\" : { \"B\" : 2, \"A\" : \"1\" },\n"
                            "  \"name\": \"other name\",\n  \"inline\": [ \"apt-get update\", "
                            "\"true\" ],\n  \"type\": \"shell\"\n}\n";
    static const char c[] = "{\"type\":\"shell\",\"inline\":[\"apt-get update\",\"true\"],"
                            "\"env\":{\"A\":\"1\",\"B\":3},\"name\":\"x\"}";
    static const char f[] = "{\"type\":\"shell\",\"env\":{\"B\":[1, 2.5]}}";
    struct json_value *ja = NULL, *jb = NULL, *jc = NULL, *jf = NULL;
    struct bake_value *va = NULL, *vb = NULL, *vc = NULL, *vf = NULL;
    struct digest k0, ka, kb, kc;

    memset(&k0, 5, sizeof(k0));
    if (json_parse(a, strlen(a), &ja) < 0 || json_parse(b, strlen(b), &jb) < 0 ||
        json_parse(c, strlen(c), &jc) < 0 || json_parse(f, strlen(f), &jf) < 0) {
        ok(0, "parse the JSON steps: %s", error_message());
        return;
    }
    is_int(bake_value_from_json(ja, "steps[0]", &va), 0, "convert step a");
    is_int(bake_value_from_json(jb, "steps[0]", &vb), 0, "convert step b");
    is_int(bake_value_from_json(jc, "steps[0]", &vc), 0, "convert step c");
    if (va && vb && vc) {
        bake_cache_key_step(&k0, va, NULL, dir, NULL, 0, NULL, &ka);
        bake_cache_key_step(&k0, vb, NULL, dir, NULL, 0, NULL, &kb);
        bake_cache_key_step(&k0, vc, NULL, dir, NULL, 0, NULL, &kc);
        ok(digest_equal(&ka, &kb), "whitespace, key order and the name do not change the key");
        ok(!digest_equal(&ka, &kc), "a nested value does");
    }
    is_int(bake_value_from_json(jf, "steps[3]", &vf), -EINVAL, "a fraction is refused");
    ok(error_message() && strstr(error_message(), "steps[3].env.B[1]"),
       "the message names the place: %s", error_message());
    bake_value_free(va);
    bake_value_free(vb);
    bake_value_free(vc);
    bake_value_free(vf);
    bake_value_free(NULL);
    json_free(ja);
    json_free(jb);
    json_free(jc);
    json_free(jf);
}

int main(void)
{
    char tmpl[] = "/tmp/kiln-test-cache-key-XXXXXX";

    if (!mkdtemp(tmpl)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    snprintf(dir, sizeof(dir), "%s", tmpl);
    test_order_and_values();
    test_inputs();
    test_sensitive();
    test_json();
    {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
        if (system(cmd) != 0)
            printf("# cannot remove %s\n", tmpl);
    }
    return done_testing();
}
