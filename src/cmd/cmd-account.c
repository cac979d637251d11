/* kiln account create|list: the accounts of DATA/accounts.db (accounts are
 * global: --region does not apply to them). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/accounts.h"
#include "service/service.h"

static const char create_usage[] =
    "usage: kiln account create NAME [--json] [--credentials FILE [--profile P]]\n"
    "\n"
    "Create an account named NAME (1 to 64 letters, digits, '-', '_' and '.';\n"
    "names are unique without regard to case) with a new 12-digit account id and\n"
    "an access key, and print them:\n"
    "\n"
    "    AccountId 123456789012\n"
    "    AccessKeyId AKIA...\n"
    "    SecretAccessKey ...\n"
    "\n"
    "  --json              print {\"AccountId\",\"AccessKeyId\",\"SecretAccessKey\"}\n"
    "  --credentials FILE  also write the key to FILE in the aws CLI's credentials\n"
    "                      format (mode 0600); FILE must not exist yet\n"
    "  --profile P         the profile name in FILE (default: NAME)\n";

static const char list_usage[] =
    "usage: kiln account list [--json]\n"
    "\n"
    "List the accounts: id, name, creation time and access key ids (never the\n"
    "secrets).\n";

static const char account_usage[] =
    "usage: kiln account create|list ...\n"
    "\n"
    "  create NAME   create an account and its first access key\n"
    "  list          list accounts and their access key ids\n"
    "\n"
    "Accounts are global to the data directory (DATA/accounts.db), not per region.\n"
    "`kiln account VERB --help` describes each.\n";

enum { OPT_JSON = 1000, OPT_CREDENTIALS, OPT_PROFILE };

static const struct option all_options[] = {
    CLI_COMMON_OPTIONS,
    { "json", no_argument, NULL, OPT_JSON },
    { "credentials", required_argument, NULL, OPT_CREDENTIALS },
    { "profile", required_argument, NULL, OPT_PROFILE },
    { NULL, 0, NULL, 0 },
};

struct account_args {
    bool json;
    const char *credentials;
    const char *profile;
    char **pos;
};

static int account_option(int opt, const char *arg, void *ud)
{
    struct account_args *a = ud;

    switch (opt) {
    case OPT_JSON: a->json = true; break;
    case OPT_CREDENTIALS: a->credentials = arg; break;
    case OPT_PROFILE: a->profile = arg; break;
    }
    return -1;
}

/* Parse argv; `allowed` lists the verb's own options.  Returns -1 to
 * continue, or an exit status. */
static int parse(struct cli *cli, int argc, char **argv, const char *usage, const char *allowed,
                 int npos, struct account_args *a)
{
    return cli_parse(cli, argc, argv, all_options, usage, allowed, npos, account_option, a,
                     &a->pos);
}

/* DATA/accounts.db of --data-dir (or the default data directory); a new
 * string. */
static char *cli_accounts_path(struct cli *cli)
{
    if (!cli->data_dir)
        cli->data_dir = service_default_data_dir();
    return accounts_path(cli->data_dir);
}

static int open_accounts(struct cli *cli, struct accounts **ret)
{
    _cleanup_free_ char *path = cli_accounts_path(cli);
    int r = mkdir_p(cli->data_dir);

    if (r < 0)
        return error_set(r, "cannot create data directory '%s': %s", cli->data_dir,
                         strerror(-r));
    return accounts_open(path, ret);
}

static int do_create(struct cli *cli, int argc, char **argv)
{
    struct account_args a = { 0 };
    struct accounts *accts = NULL;
    struct account_credentials c;
    const char *name;
    int ex, e;

    ex = parse(cli, argc, argv, create_usage, "json credentials profile", 1, &a);
    if (ex >= 0)
        return ex;
    name = a.pos[0];
    if (!account_name_is_valid(name)) {
        fprintf(stderr, "kiln: invalid account name '%s' (1 to %d letters, digits, '-', '_' "
                        "and '.')\n", name, ACCOUNT_NAME_MAX);
        return EXIT_USAGE;
    }
    /* Names are case-insensitive (accounts_get_by_name()). */
    if (strcasecmp(name, SERVICE_PROVIDER_ACCOUNT) == 0) {
        fprintf(stderr,
                "kiln: the account name '%s' is reserved: it is the provider account "
                "that owns the base images (`kiln base-image build`)\n",
                name);
        return EXIT_USAGE;
    }
    if (a.profile && !a.credentials) {
        fprintf(stderr, "kiln: --profile needs --credentials FILE\n");
        return EXIT_USAGE;
    }
    if (a.profile && !account_name_is_valid(a.profile)) {
        fprintf(stderr, "kiln: invalid profile name '%s'\n", a.profile);
        return EXIT_USAGE;
    }
    /* Never clobber a credentials file (it may be ~/.aws/credentials with
     * other profiles): refuse before creating anything. */
    if (a.credentials && access(a.credentials, F_OK) == 0) {
        fprintf(stderr, "kiln: '%s' exists: kiln does not merge credentials files\n",
                a.credentials);
        return 1;
    }

    e = open_accounts(cli, &accts);
    if (e == 0)
        e = accounts_create(accts, name, &c);
    accounts_free(accts);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (a.json) {
        printf("{\"AccountId\":\"%s\",\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"%s\"}\n",
               c.account_id, c.access_key_id, c.secret);
    } else {
        printf("AccountId %s\nAccessKeyId %s\nSecretAccessKey %s\n", c.account_id,
               c.access_key_id, c.secret);
    }
    fflush(stdout);
    if (a.credentials) {
        e = accounts_write_credentials_file(a.credentials, &c,
                                            a.profile ? a.profile : name);
        if (e < 0) {
            cli_fail(e);
            explicit_bzero(&c, sizeof(c));
            return 1;
        }
    }
    explicit_bzero(&c, sizeof(c));
    return 0;
}

static int do_list(struct cli *cli, int argc, char **argv)
{
    struct account_args a = { 0 };
    struct accounts *accts = NULL;
    struct account *list = NULL;
    _cleanup_free_ char *path = NULL;
    size_t n = 0;
    int ex, e = 0;

    ex = parse(cli, argc, argv, list_usage, "json", 0, &a);
    if (ex >= 0)
        return ex;
    path = cli_accounts_path(cli);
    /* Listing creates nothing: no database yet means no accounts. */
    if (access(path, F_OK) == 0) {
        e = accounts_open(path, &accts);
        if (e == 0)
            e = accounts_list(accts, &list, &n);
        accounts_free(accts);
    } else if (errno != ENOENT) {
        e = error_set(errno, "cannot open accounts database '%s': %s", path, strerror(errno));
    }
    if (e < 0) {
        cli_error(e, "cannot list accounts");
        return 1;
    }

    if (a.json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            char t[40];
            printf("%s{\"AccountId\":\"%s\",\"Name\":", i ? ",\n " : "", list[i].id);
            json_string(stdout, list[i].name);
            printf(",\"Created\":\"%s\",\"AccessKeys\":[",
                   format_time_ms(list[i].created, t, sizeof(t)));
            for (size_t k = 0; k < list[i].n_keys; k++)
                printf("%s{\"AccessKeyId\":\"%s\",\"Status\":\"%s\",\"Created\":\"%s\"}",
                       k ? "," : "", list[i].keys[k].id,
                       list[i].keys[k].active ? "Active" : "Inactive",
                       format_time_ms(list[i].keys[k].created, t, sizeof(t)));
            printf("]}");
        }
        printf("]\n");
    } else {
        if (n)
            printf("%-12s  %-20s  %-24s  %s\n", "ACCOUNT", "NAME", "CREATED", "ACCESS KEYS");
        for (size_t i = 0; i < n; i++) {
            char t[40];
            printf("%-12s  %-20s  %-24s ", list[i].id, list[i].name,
                   format_time_ms(list[i].created, t, sizeof(t)));
            for (size_t k = 0; k < list[i].n_keys; k++)
                printf(" %s%s", list[i].keys[k].id,
                       list[i].keys[k].active ? "" : " (inactive)");
            printf("\n");
        }
    }
    accounts_list_free(list, n);
    return 0;
}

int cmd_account(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        { "create", do_create },
        { "list", do_list },
    };

    return cli_dispatch(cli, argc, argv, "account", verbs, ARRAY_SIZE(verbs), account_usage);
}
