/* Bake templates (src/bake/template.c, interp.c, packer.c): a template
 * with every step type reads into the expected structs; every class of bad
 * template is refused with the exact message naming the place;
 * interpolation (variables, overrides, var files, cycles, env where
 * allowed, isotime, fields) and masking; a Packer template translates into
 * the same struct; every examples/ template (directory in argv[1]) loads and
 * expands. */
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bake/interp.h"
#include "bake/packer.h"
#include "bake/template.h"
#include "common/error.h"
#include "common/json.h"
#include "common/util.h"
#include "tap.h"

#define T(...) #__VA_ARGS__

static struct bake_template *parse(const char *text)
{
    struct bake_template *t = NULL;

    error_clear();
    if (bake_template_parse(text, strlen(text), &t) < 0)
        printf("# parse failed: %s\n", error_message());
    return t;
}

static void refused(const char *text, const char *want)
{
    struct bake_template *t = NULL;
    int r;

    error_clear();
    r = bake_template_parse(text, strlen(text), &t);
    is_int(r, -EINVAL, "refused: %s", want);
    is_str(error_message(), want, "  message names the place");
    ok(t == NULL, "  nothing returned");
    bake_template_free(t);
}

#define HEAD "\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"source\": {\"image_id\": \"ami-1\"}, "

static const char good[] = T({
    "schema": "kiln-bake/1",
    "_comment": "ignored",
    "name": "web",
    "description": "a web server",
    "version": "1.2.x",
    "variables": {
        "app": {"type": "string", "default": "nginx"},
        "pw": {"type": "string", "sensitive": true, "default": "s3cr'et"},
        "greeting": {"default": "hello {{var `app`}}"}
    },
    "source": {"image_filter": {"owners": ["kiln"],
                                "filters": {"name": "kiln/images/debian-12-*",
                                            "architecture": ["x86_64"]},
                                "most_recent": true}},
    "build": {"instance_type": "t3.small", "root_volume_gib": 4, "executor": "auto",
              "timeout": "1h30m", "on_error": "keep", "cache": false},
    "steps": [
        {"name": "motd", "type": "file", "content": "{{var `greeting`}}\n",
         "destination": "/etc/motd", "mode": "0644", "owner": "0:0"},
        {"type": "file", "source": "files/a.conf", "destination": "/etc/a.conf", "mkdirs": false},
        {"type": "shell", "inline": ["apt-get install -y {{var `app`}}"],
         "env": {"DEBIAN_FRONTEND": "noninteractive"}, "timeout": "20m", "max_retries": 2,
         "cache": {"ttl": "7d"}, "executor": "agent"},
        {"type": "shell", "script": "scripts/x.sh"},
        {"type": "shell", "scripts": ["a.sh", "b.sh"]},
        {"type": "systemd", "enable": ["nginx.service"], "disable": ["ssh.service"],
         "mask": ["apt-daily.timer"]},
        {"type": "delete", "path": "/var/cache/apt/archives", "recursive": true},
        {"type": "symlink", "target": "/usr/bin/python3", "link": "/usr/local/bin/python"},
        {"type": "append_line", "path": "/etc/hosts", "line": "127.0.1.1 web"},
        {"type": "mkdir", "path": "/srv/www", "mode": "0755", "owner": "33:33"},
        {"type": "reboot"},
        {"type": "shell", "phase": "validate", "inline": ["nginx -t"], "cache": false}
    ],
    "tests": {"instance_type": "t3.micro", "timeout": "20m",
              "steps": [{"type": "shell", "inline": ["systemctl is-active nginx"]}]},
    "output": {"name": "web {{isotime `2006-01-02T150405`}}", "description": "from {{ .SourceAMIName }}",
               "tags": {"app": "web", "base": "{{ .SourceAMI }}"}, "snapshot_tags": {"app": "web"},
               "version": "1.2.3"},
    "distribution": {"regions": ["local-2"],
                     "launch_permission": {"user_ids": ["111122223333"], "groups": ["all"]},
                     "deprecate_after": "180d"},
    "manifest": {"output": "m.json", "custom_data": {"sha": "{{env `KILN_TEST_SHA`}}"}}
});

static void test_good(void)
{
    struct bake_template *t = parse(good);
    struct bake_interp *ip = bake_interp_new(1764230000); /* 2025-11-27T07:53:20Z */
    const struct bake_step *s;

    ok(t != NULL, "a template with every step type parses");
    if (!t)
        return;
    is_str(t->name, "web", "name");
    is_str(t->version, "1.2.x", "version");
    is_int(t->n_variables, 3, "three variables (comments skipped)");
    ok(t->variables[1].sensitive, "pw is sensitive");
    ok(t->source.has_filter && t->source.most_recent && t->source.owners.n == 1,
       "source filter with owners and most_recent");
    is_int(t->source.n_filters, 2, "two filters");
    is_str(t->source.filters[1].values.items[0], "x86_64", "a filter's array value");
    is_int(t->build.timeout_s, 5400, "1h30m is 5400 s");
    is_int(t->build.on_error, BAKE_ON_ERROR_KEEP, "on_error keep");
    ok(!t->build.cache, "build cache off");
    is_int(t->build.root_volume_gib, 4, "root_volume_gib");
    is_int(t->n_steps, 12, "twelve steps");
    s = &t->steps[0];
    ok(s->type == BAKE_STEP_FILE && s->mode == 0644 && s->uid == 0 && s->gid == 0 && s->mkdirs,
       "file: mode 0644, owner 0:0, mkdirs by default");
    ok(!t->steps[1].mkdirs && t->steps[1].mode == -1 && t->steps[1].uid == -1,
       "file: mkdirs false, mode and owner unset");
    is_str(t->steps[1].name, "1-file", "an unnamed step is named by index and type");
    s = &t->steps[2];
    ok(s->type == BAKE_STEP_SHELL && s->inline_cmds.n == 1 && s->timeout_s == 1200 &&
           s->max_retries == 2 && s->cache && s->cache_ttl_s == 7 * 86400 &&
           s->executor == BAKE_EXEC_AGENT && s->env.n == 1,
       "shell inline with env, timeout, retries, cache ttl, executor");
    is_str(t->steps[3].script, "scripts/x.sh", "shell script");
    is_int(t->steps[4].scripts.n, 2, "shell scripts");
    s = &t->steps[5];
    ok(s->enable.n == 1 && s->disable.n == 1 && s->mask.n == 1, "systemd enable/disable/mask");
    ok(t->steps[6].type == BAKE_STEP_DELETE && t->steps[6].recursive, "delete recursive");
    is_str(t->steps[7].link, "/usr/local/bin/python", "symlink");
    is_str(t->steps[8].line, "127.0.1.1 web", "append_line");
    ok(t->steps[9].mode == 0755 && t->steps[9].uid == 33, "mkdir with mode and owner");
    is_int(t->steps[10].type, BAKE_STEP_REBOOT, "reboot");
    ok(t->steps[11].phase == BAKE_PHASE_VALIDATE && !t->steps[11].cache, "validate phase");
    ok(t->has_tests && t->tests.n_steps == 1 && t->tests.timeout_s == 1200, "tests");
    is_str(t->tests.steps[0].place, "tests.steps[0]", "a test step's place");
    ok(t->distribution.deprecate_after_s == 180 * 86400 && t->distribution.groups.n == 1,
       "distribution");

    setenv("KILN_TEST_SHA", "abc123", 1);
    is_int(bake_template_resolve_variables(t, ip), 0, "variables resolve");
    is_str(bake_interp_var(ip, "greeting"), "hello nginx", "a default uses another variable");
    is_int(bake_template_expand_source(t, ip), 0, "source expands");
    error_clear();
    is_int(bake_template_expand(t, ip), -EINVAL, "fields must be set before expanding");
    is_str(error_message(), "output.description: field '.SourceAMIName' has no value here",
           "  the message names the place and the field");
    bake_interp_set_field(ip, "SourceAMIName", "debian-12-x");
    bake_interp_set_field(ip, "SourceAMI", "ami-0abc");
    is_int(bake_template_expand(t, ip), 0, "everything expands with the fields");
    is_str(t->steps[0].content, "hello nginx\n", "a step's content expanded");
    is_str(t->steps[2].inline_cmds.items[0], "apt-get install -y nginx", "inline expanded");
    is_str(t->output.name, "web 2025-11-27T075320", "isotime with a Go layout, UTC");
    is_str(t->output.tags.items[1].value, "ami-0abc", "a tag from a field");
    is_str(t->manifest.custom_data.items[0].value, "abc123", "env in manifest.custom_data");
    bake_interp_free(ip);
    bake_template_free(t);
}

static void test_bad(void)
{
    refused("[]", "template: expected an object, got array");
    refused("{\"name\": \"x\"}", "schema: required (\"kiln-bake/1\")");
    refused("{\"schema\": \"kiln-bake/2\"}",
            "schema: unknown schema 'kiln-bake/2' (this kiln reads \"kiln-bake/1\")");
    refused("{\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"steps\": []}",
            "source: required (image_id or image_filter)");
    refused("{" HEAD "\"nmae\": 1}", "nmae: unknown key");
    refused("{" HEAD "\"steps\": [{\"type\": \"reboot\"}, {\"type\": \"reboot\"}, "
            "{\"type\": \"file\", \"content\": \"\", \"destinaton\": \"/x\"}]}",
            "steps[2].destinaton: unknown key");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\", \"destination\": \"/x\", "
            "\"inline\": []}]}",
            "steps[0].inline: not a key of a 'file' step");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": 3, \"destination\": \"/x\"}]}",
            "steps[0].content: expected a string, got number");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\"}]}",
            "steps[0].destination: required");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\", \"source\": \"a\", "
            "\"destination\": \"/x\"}]}",
            "steps[0]: needs exactly one of source and content");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\", \"destination\": \"x\"}]}",
            "steps[0]: 'x' is not an absolute path");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\", \"destination\": \"/x\", "
            "\"mode\": \"0855\"}]}",
            "steps[0].mode: bad mode '0855' (an octal string like \"0644\")");
    refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"\", \"destination\": \"/x\", "
            "\"mode\": 644}]}",
            "steps[0].mode: expected an octal string like \"0644\", got number");
    refused("{" HEAD "\"steps\": [{\"type\": \"mkdir\", \"path\": \"/x\", \"owner\": \"root\"}]}",
            "steps[0].owner: bad owner 'root' (numeric \"uid:gid\", like \"0:0\")");
    refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"a\"], \"timeout\": \"5y\"}]}",
            "steps[0].timeout: bad duration '5y' (examples: 90s, 20m, 2h, 7d)");
    refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"a\"], \"script\": \"b\"}]}",
            "steps[0]: needs exactly one of inline, script and scripts");
    refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [1]}]}",
            "steps[0].inline[0]: expected a string, got number");
    refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"a\"], \"executor\": \"offline\"}]}",
            "steps[0].executor: a shell step runs only through the agent");
    refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"a\"], \"env\": {\"A-B\": \"1\"}}]}",
            "steps[0].env.A-B: bad environment variable name");
    refused("{" HEAD "\"steps\": [{\"type\": \"ansible\"}]}",
            "steps[0].type: unknown step type 'ansible' (file, shell, systemd, delete, symlink, "
            "append_line, mkdir, reboot)");
    refused("{" HEAD "\"steps\": [{\"name\": \"a\"}]}", "steps[0].type: required");
    refused("{" HEAD "\"steps\": [{\"type\": \"systemd\"}]}",
            "steps[0]: needs at least one of enable, disable and mask");
    refused("{" HEAD "\"steps\": [{\"type\": \"delete\", \"path\": \"/\"}]}",
            "steps[0].path: refusing to delete '/'");
    refused("{" HEAD "\"steps\": [{\"type\": \"append_line\", \"path\": \"/a\", \"line\": \"a\\nb\"}]}",
            "steps[0].line: must be one line (no newline)");
    refused("{" HEAD "\"steps\": [{\"type\": \"reboot\", \"phase\": \"test\"}]}",
            "steps[0].phase: unknown phase 'test' (build or validate)");
    refused("{" HEAD "\"steps\": [{\"type\": \"reboot\", \"cache\": {\"tll\": \"1d\"}}]}",
            "steps[0].cache.tll: unknown key");
    refused("{" HEAD "\"steps\": {}}", "steps: expected an array of steps, got object");
    refused("{" HEAD "\"steps\": []}", "steps: at least one step");
    refused("{\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"source\": {}, \"steps\": []}",
            "source: needs image_id or image_filter");
    refused("{\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"source\": {\"image_filter\": "
            "{\"filters\": {\"name\": \"a\"}}}, \"steps\": []}",
            "source.image_filter.owners: required (at least one owner)");
    refused("{\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"source\": {\"image_filter\": "
            "{\"owners\": [\"kiln\"], \"filters\": {\"name\": \"a\"}, \"most_recnt\": true}}}",
            "source.image_filter.most_recnt: unknown key");
    refused("{" HEAD "\"build\": {\"on_error\": \"retry\"}, \"steps\": [{\"type\": \"reboot\"}]}",
            "build.on_error: unknown value 'retry' (cleanup, keep or abort)");
    refused("{" HEAD "\"build\": {\"root_volume_gib\": \"8\"}, \"steps\": [{\"type\": \"reboot\"}]}",
            "build.root_volume_gib: expected an integer, got string");
    refused("{" HEAD "\"variables\": {\"a\": {\"type\": \"number\"}}, \"steps\": [{\"type\": \"reboot\"}]}",
            "variables.a.type: unknown type 'number' (only \"string\")");
    refused("{" HEAD "\"variables\": {\"a\": {\"deafult\": \"1\"}}, \"steps\": [{\"type\": \"reboot\"}]}",
            "variables.a.deafult: unknown key");
    refused("{" HEAD "\"distribution\": {\"launch_permission\": {\"groups\": [\"staff\"]}}, "
            "\"steps\": [{\"type\": \"reboot\"}]}",
            "distribution.launch_permission.groups[0]: unknown group 'staff' (only \"all\")");
    refused("{" HEAD "\"tests\": {\"steps\": [{\"type\": \"reboot\"}]}, \"steps\": [{\"type\": \"reboot\"}]}",
            "tests.steps[0]: a test instance is not rebooted by a step");
    refused("{" HEAD "\"output\": {\"tags\": {\"a\": 1}}, \"steps\": [{\"type\": \"reboot\"}]}",
            "output.tags.a: expected a string, got number");
    refused("{\"schema\": \"kiln-bake/1\",}", "malformed JSON at offset 25: expected a member name");
}

/* Parse, resolve and expand; returns the error or 0. */
static int expand_all(const char *text, struct bake_interp *ip)
{
    struct bake_template *t = NULL;
    int r;

    error_clear();
    r = bake_template_parse(text, strlen(text), &t);
    if (r == 0)
        r = bake_template_resolve_variables(t, ip);
    if (r == 0)
        r = bake_template_expand_source(t, ip);
    if (r == 0)
        r = bake_template_expand(t, ip);
    bake_template_free(t);
    return r;
}

static void expand_refused(const char *text, const char *want)
{
    struct bake_interp *ip = bake_interp_new(0);

    is_int(expand_all(text, ip), -EINVAL, "expansion refused: %s", want);
    is_str(error_message(), want, "  message names the place");
    bake_interp_free(ip);
}

static void test_interp(void)
{
    struct bake_interp *ip;
    char *s = NULL, *m;
    char path[] = "/tmp/kiln-test-varfile-XXXXXX";
    int fd;

    expand_refused("{" HEAD "\"steps\": [{\"type\": \"file\", \"content\": \"{{var `nope`}}\", "
                   "\"destination\": \"/x\"}]}",
                   "steps[0].content: unknown variable 'nope'");
    expand_refused("{" HEAD "\"variables\": {\"a\": {\"default\": \"{{var `b`}}\"}, "
                   "\"b\": {\"default\": \"x{{user `a`}}\"}}, \"steps\": [{\"type\": \"reboot\"}]}",
                   "variables.b.default: variable cycle through 'a'");
    expand_refused("{" HEAD "\"variables\": {\"a\": {\"default\": \"{{var `a`}}\"}}, "
                   "\"steps\": [{\"type\": \"reboot\"}]}",
                   "variables.a.default: variable cycle through 'a'");
    expand_refused("{" HEAD "\"variables\": {\"a\": {\"required\": true}}, "
                   "\"steps\": [{\"type\": \"reboot\"}]}",
                   "variables.a: required variable has no value (give --var a=...)");
    expand_refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"{{env `HOME`}}\"]}]}",
                   "steps[0].inline[0]: 'env' is allowed only in variables and "
                   "manifest.custom_data");
    expand_refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"{{sed `x`}}\"]}]}",
                   "steps[0].inline[0]: unknown function 'sed'");
    expand_refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"{{ .Password }}\"]}]}",
                   "steps[0].inline[0]: unknown field '.Password'");
    expand_refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"{{timestamp\"]}]}",
                   "steps[0].inline[0]: '{{' without '}}'");
    expand_refused("{" HEAD "\"steps\": [{\"type\": \"shell\", \"inline\": [\"{{var `a` `b`}}\"]}]}",
                   "steps[0].inline[0]: 'var' takes at most one argument");
    expand_refused("{\"schema\": \"kiln-bake/1\", \"name\": \"x\", \"source\": {\"image_id\": "
                   "\"{{ .SourceAMI }}\"}, \"steps\": [{\"type\": \"reboot\"}]}",
                   "source.image_id: field '.SourceAMI' has no value here");

    /* Overrides: --var beats env beats default; var files. */
    ip = bake_interp_new(0);
    setenv("KILN_TEST_A", "from-env", 1);
    is_int(bake_interp_declare(ip, "a", "dflt", false, false, "KILN_TEST_A"), 0, "declare a");
    is_int(bake_interp_declare(ip, "b", "{{env `KILN_TEST_A`}}-b", false, false, NULL), 0,
           "declare b");
    is_int(bake_interp_declare(ip, "c", "c", false, true, NULL), 0, "declare c");
    is_int(bake_interp_declare(ip, "a", NULL, false, false, NULL), -EEXIST, "declared twice");
    fd = mkstemp(path);
    ok(fd >= 0 && write(fd, "{\"c\": \"from-file\"}", 18) == 18, "var file written");
    close(fd);
    is_int(bake_interp_load_var_file(ip, path), 0, "var file loads");
    is_int(bake_interp_parse_var_arg(ip, "=x"), -EINVAL, "--var without a name");
    is_int(bake_interp_resolve(ip), 0, "resolve");
    is_str(bake_interp_var(ip, "a"), "from-env", "env beats default");
    is_str(bake_interp_var(ip, "b"), "from-env-b", "env in a default");
    is_str(bake_interp_var(ip, "c"), "from-file", "var file beats default");
    m = bake_interp_mask(ip, "password is from-file, 'from-file' here");
    is_str(m, "password is <sensitive>, '<sensitive>' here", "a sensitive value is masked");
    free(m);
    bake_interp_free(ip);

    ip = bake_interp_new(0);
    bake_interp_declare(ip, "a", "dflt", false, false, NULL);
    bake_interp_parse_var_arg(ip, "a=cmd");
    bake_interp_parse_var_arg(ip, "zz=1");
    error_clear();
    is_int(bake_interp_resolve(ip), -EINVAL, "--var of an undeclared variable");
    is_str(error_message(), "--var 'zz': no such variable in the template", "  message");
    bake_interp_free(ip);

    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && write(fd, "{\"c\": 1}", 8) == 8, "a bad var file written");
    close(fd);
    ip = bake_interp_new(0);
    error_clear();
    is_int(bake_interp_load_var_file(ip, path), -EINVAL, "a var file with a number");
    ok(error_message() && strstr(error_message(), "c: expected a string, got number"),
       "  message names the key: %s", error_message());
    /* over JSON_MAX_INPUT, refused before parsing; then gone */
    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && ftruncate(fd, JSON_MAX_INPUT + 1) == 0, "a var file of 1 MiB + 1 written");
    close(fd);
    error_clear();
    is_int(bake_interp_load_var_file(ip, path), -EINVAL, "a var file over 1 MiB");
    ok(error_message() && strstr(error_message(), "is larger than 1048576 bytes"),
       "  message says so: %s", error_message());
    unlink(path);
    error_clear();
    is_int(bake_interp_load_var_file(ip, path), -ENOENT, "a missing var file is -ENOENT");
    ok(error_message() && strncmp(error_message(), "cannot open var file '", 22) == 0,
       "  message names it: %s", error_message());
    bake_interp_free(ip);

    /* Masking: shell-quoted forms. */
    ip = bake_interp_new(0);
    bake_interp_add_secret(ip, "it's a pw");
    m = bake_interp_mask(ip, "echo 'it'\\''s a pw' it\\'s\\ a\\ pw it's a pw");
    is_str(m, "echo '<sensitive>' <sensitive> <sensitive>", "quoted forms are masked");
    free(m);
    bake_interp_add_secret(ip, "");
    m = bake_interp_mask(ip, "nothing here");
    is_str(m, "nothing here", "an empty secret masks nothing");
    free(m);

    /* Time and uuid: fixed per build. */
    is_int(bake_interp_expand(ip, "{{timestamp}}", "t", 0, &s), 0, "timestamp");
    is_str(s, "0", "timestamp is the build's now");
    free(s);
    is_int(bake_interp_expand(ip, "{{isotime}}", "t", 0, &s), 0, "isotime default");
    is_str(s, "1970-01-01T00:00:00Z", "RFC 3339 in UTC");
    free(s);
    is_int(bake_interp_expand(ip, "{{ isotime \"Mon Jan _2 15:04:05 MST 2006 100%\" }}", "t", 0,
                              &s),
           0, "isotime with names and a percent");
    is_str(s, "Thu Jan  1 00:00:00 UTC 1970 100%", "names and a literal percent");
    free(s);
    {
        char *u1 = NULL, *u2 = NULL;
        bake_interp_expand(ip, "{{uuid}}", "t", 0, &u1);
        bake_interp_expand(ip, "{{uuid}}", "t", 0, &u2);
        ok(u1 && u2 && strlen(u1) == 36 && strcmp(u1, u2) == 0 && u1[14] == '4',
           "uuid is a v4 uuid, the same for the whole build");
        free(u1);
        free(u2);
    }
    bake_interp_free(ip);
}

static const char packer[] = T({
    "_comment": "a Packer template",
    "description": "packer web",
    "variables": {"aws_access_key": "{{env `AWS_ACCESS_KEY_ID`}}", "pw": "x", "need": null},
    "sensitive-variables": ["pw"],
    "min_packer_version": "1.6.0",
    "builders": [{
        "type": "amazon-ebs", "region": "us-east-1", "access_key": "{{user `aws_access_key`}}",
        "source_ami_filter": {"filters": {"name": "kiln/images/debian-12-*"}, "owners": ["kiln"],
                              "most_recent": true},
        "instance_type": "t3.small", "ssh_username": "admin",
        "ami_name": "web {{timestamp}}", "ami_description": "d", "ami_regions": ["local-2"],
        "ami_users": ["111122223333"], "tags": {"a": "b"}, "snapshot_tags": {"c": "d"}
    }],
    "provisioners": [
        {"type": "shell", "inline": ["echo hi"], "environment_vars": ["A=1", "B=x=y"],
         "execute_command": "sudo {{.Path}}"},
        {"type": "file", "source": "f", "destination": "/etc/f"},
        {"type": "shell", "scripts": ["a.sh"], "max_retries": 1, "timeout": "5m"}
    ],
    "post-processors": [{"type": "manifest", "output": "out.json", "strip_path": true,
                         "custom_data": {"k": "v"}}]
});

static void packer_refused(const char *text, const char *want)
{
    struct bake_template *t = NULL;

    error_clear();
    is_int(bake_packer_parse(text, strlen(text), &t), -EINVAL, "packer refused: %s", want);
    is_str(error_message(), want, "  message names the place");
    bake_template_free(t);
}

#define PB "\"builders\": [{\"type\": \"amazon-ebs\", \"source_ami\": \"ami-1\", \"ami_name\": \"n\"}]"

static void test_packer(void)
{
    struct bake_template *t = NULL;

    error_clear();
    is_int(bake_packer_parse(packer, strlen(packer), &t), 0, "the Packer template translates");
    if (!t)
        return;
    ok(t->source.has_filter && t->source.most_recent && t->source.n_filters == 1 &&
           strcmp(t->source.owners.items[0], "kiln") == 0,
       "source_ami_filter -> source.image_filter");
    is_str(t->build.instance_type, "t3.small", "instance_type");
    is_str(t->output.name, "web {{timestamp}}", "ami_name -> output.name (still templated)");
    is_str(t->distribution.regions.items[0], "local-2", "ami_regions -> distribution.regions");
    is_str(t->distribution.user_ids.items[0], "111122223333", "ami_users -> launch permission");
    ok(t->output.tags.n == 1 && t->output.snapshot_tags.n == 1, "tags and snapshot_tags");
    is_int(t->n_steps, 3, "three provisioners -> three steps");
    ok(t->steps[0].type == BAKE_STEP_SHELL && t->steps[0].env.n == 2 &&
           strcmp(t->steps[0].env.items[1].value, "x=y") == 0,
       "environment_vars -> env");
    ok(t->steps[1].type == BAKE_STEP_FILE && strcmp(t->steps[1].destination, "/etc/f") == 0,
       "file provisioner");
    ok(t->steps[2].max_retries == 1 && t->steps[2].timeout_s == 300, "max_retries and timeout");
    ok(t->manifest.strip_path && strcmp(t->manifest.output, "out.json") == 0 &&
           t->manifest.custom_data.n == 1,
       "manifest post-processor");
    ok(t->n_variables == 3 && t->variables[1].sensitive && t->variables[2].required,
       "variables: sensitive, and null means required");
    is_int(t->warnings.n, 5, "five warnings");
    is_str(t->warnings.items[0], "min_packer_version: ignored", "min_packer_version noted");
    is_str(t->warnings.items[1],
           "builders[0].region: 'us-east-1' noted: kiln builds in the daemon's region",
           "region noted");
    is_str(t->warnings.items[2],
           "builders[0].access_key: ignored: kiln uses its own credentials and endpoint",
           "access_key ignored with a warning");
    is_str(t->warnings.items[3],
           "builders[0].ssh_username: noted: kiln runs steps through its agent, without SSH",
           "ssh_username noted");
    is_str(t->warnings.items[4],
           "provisioners[0].execute_command: ignored: the agent runs scripts itself",
           "execute_command ignored with a warning");
    bake_template_free(t);

    packer_refused("{\"builders\": [{\"type\": \"qemu\"}], \"provisioners\": []}",
                   "builders[0].type: builder 'qemu' is outside kiln's Packer subset (only "
                   "amazon-ebs)");
    packer_refused("{\"builders\": [{\"type\": \"amazon-ebs\", \"source_ami\": \"ami-1\", "
                   "\"ami_name\": \"n\", \"spot_price\": \"auto\"}], \"provisioners\": []}",
                   "builders[0].spot_price: outside kiln's Packer subset (docs/baking.md)");
    packer_refused("{\"builders\": [{\"type\": \"amazon-ebs\", \"ami_name\": \"n\"}], "
                   "\"provisioners\": []}",
                   "builders[0]: needs source_ami or source_ami_filter");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"ansible\"}]}",
                   "provisioners[0].type: provisioner 'ansible' is outside kiln's Packer subset "
                   "(shell and file)");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"file\", \"source\": \"a\", "
                   "\"destination\": \"/a\", \"direction\": \"download\"}]}",
                   "provisioners[0].direction: only \"upload\" is in kiln's Packer subset");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"], "
                   "\"only\": [\"x\"]}]}",
                   "provisioners[0].only: outside kiln's Packer subset (docs/baking.md)");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"]}], "
                   "\"post-processors\": [\"compress\"]}",
                   "post-processors[0]: post-processor 'compress' is outside kiln's Packer "
                   "subset (only manifest)");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"]}], "
                   "\"post-processors\": [[{\"type\": \"manifest\"}]]}",
                   "post-processors[0]: post-processor chains are outside kiln's Packer subset");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"]}], "
                   "\"push\": {}}",
                   "push: outside kiln's Packer subset (docs/baking.md)");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"file\", \"source\": \"a\", "
                   "\"destination\": \"a\"}]}",
                   "provisioners[0]: 'a' is not an absolute path");
    /* the typed readers the native reader shares name the Packer place */
    packer_refused("{\"builders\": [{\"type\": \"amazon-ebs\", \"ami_name\": \"n\", "
                   "\"source_ami_filter\": {\"most_recent\": \"yes\"}}], \"provisioners\": []}",
                   "builders[0].source_ami_filter.most_recent: expected a boolean, got string");
    packer_refused("{\"builders\": [{\"type\": \"amazon-ebs\", \"source_ami\": \"ami-1\", "
                   "\"ami_name\": \"n\", \"ami_users\": [\"1\", 2]}], \"provisioners\": []}",
                   "builders[0].ami_users[1]: expected a string, got number");
    packer_refused("{\"builders\": [{\"type\": \"amazon-ebs\", \"source_ami\": \"ami-1\", "
                   "\"ami_name\": 7}], \"provisioners\": []}",
                   "builders[0].ami_name: expected a string, got number");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"]}], "
                   "\"post-processors\": [{\"type\": \"manifest\", \"custom_data\": {\"k\": []}}]}",
                   "post-processors[0].custom_data.k: expected a string, got array");
    packer_refused("{" PB ", \"provisioners\": [{\"type\": \"shell\", \"inline\": [\"a\"]}], "
                   "\"post-processors\": [{\"type\": \"manifest\", \"strip_path\": 1}]}",
                   "post-processors[0].strip_path: expected a boolean, got number");
}

/* Every examples/ template loads, resolves (with fields set) and expands. */
static void test_examples(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ok(d != NULL, "examples directory '%s' opens", dir);
    if (!d)
        return;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char *path;
        struct bake_template *t = NULL;
        struct bake_interp *ip;
        int r;

        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        path = xasprintf("%s/%s", dir, e->d_name);
        ip = bake_interp_new(1764230000);
        error_clear();
        r = bake_template_load(path, &t);
        if (r == 0)
            r = bake_template_resolve_variables(t, ip);
        if (r == 0)
            r = bake_template_expand_source(t, ip);
        bake_interp_set_field(ip, "SourceAMI", "ami-0123456789abcdef0");
        bake_interp_set_field(ip, "SourceAMIName", "kiln/images/debian-12-x");
        if (r == 0)
            r = bake_template_expand(t, ip);
        is_int(r, 0, "example %s loads and expands%s%s", e->d_name, r < 0 ? ": " : "",
               r < 0 ? error_message() : "");
        n++;
        bake_template_free(t);
        bake_interp_free(ip);
        free(path);
    }
    closedir(d);
    ok(n >= 3, "at least three examples (%d)", n);
}

/* bake_template_load(): the file's path starts every message; a
 * `builders` key selects the Packer reader; a missing file is -ENOENT. */
static void test_load(void)
{
    char path[] = "/tmp/kiln-test-template-XXXXXX";
    const char bad[] = "{" HEAD "\"steps\": [{\"type\": \"reboot\", \"nmae\": \"a\"}]}";
    const char pk[] = "{\"builders\": [{\"type\": \"docker\"}]}";
    struct bake_template *t = NULL;
    char *want;
    int fd = mkstemp(path);

    ok(fd >= 0 && write(fd, bad, strlen(bad)) == (ssize_t)strlen(bad), "bad template written");
    close(fd);
    error_clear();
    is_int(bake_template_load(path, &t), -EINVAL, "a bad template file is refused");
    want = xasprintf("template '%s': steps[0].nmae: unknown key", path);
    is_str(error_message(), want, "  the message starts with the file's path");
    free(want);
    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && write(fd, pk, strlen(pk)) == (ssize_t)strlen(pk), "Packer template written");
    close(fd);
    error_clear();
    is_int(bake_template_load(path, &t), -EINVAL, "builders selects the Packer reader");
    want = xasprintf("template '%s': builders[0].type: builder 'docker' is outside kiln's "
                     "Packer subset (only amazon-ebs)",
                     path);
    is_str(error_message(), want, "  with the Packer reader's message");
    free(want);
    unlink(path);
    is_int(bake_template_load(path, &t), -ENOENT, "a missing file is -ENOENT");
    ok(t == NULL, "nothing returned");
}

int main(int argc, char **argv)
{
    test_good();
    test_bad();
    test_interp();
    test_packer();
    test_load();
    if (argc > 1)
        test_examples(argv[1]);
    return done_testing();
}
