// attnedit: command-line entry point. Dispatches to the subcommands in cli/cmd_*.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "dist/launch.h"

static const char k_usage[] =
    "attnedit " AE_VERSION " - convert Qwen3 models to cheaper attention, run and measure them\n"
    "\n"
    "usage: attnedit COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  inspect  MODEL [--json]                      architecture, parameters, KV-cache size\n"
    "  tokenize --model M (--text S | --file F) [--decode]\n"
    "  generate --model M (--prompt S | --prompt-ids \"1 2 3\") [--max-new-tokens N]\n"
    "           [--greedy | --temperature T --top-k K --top-p P --seed S] [--print-ids]\n"
    "  eval ppl --model M --file F [--ctx N] [--json]\n"
    "  eval kl  --teacher T --model S --file F [--ctx N] [--json]\n"
    "  eval tasks --model M[,M2,...] --tasks arc_easy,hellaswag,... [--shots K] [--limit N]\n"
    "           [--data-dir DIR] [--json] [--samples FILE]\n"
    "  eval passkey MODEL [--lengths 1024,2048,4096] [--depths 0,0.5,1] [--trials N]\n"
    "           [--json FILE] [--png FILE] [--compare MODEL2]  long-context key retrieval\n"
    "  prepare-data --model M --out FILE [--valid-fraction F] [--valid-out FILE2] INPUT...\n"
    "  convert  --teacher T --target mla|gateswa [target options] [--init random|teacher] --out S\n"
    "  export   --model S --format hf --out DIR [--dtype bf16|f16|f32] [--shard-size BYTES]\n"
    "  serve    --model M [--host H] [--port P] [--max-seqs N] [--cache-gb G]  OpenAI-compatible\n"
    "  bench serve --url URL [--concurrency 1,8,32] [--prompt-len N] [--gen-len M] [--json]\n"
    "  plot     RUN_DIR [-o FILE.png] [--log-y]       loss curves of a run (metrics.jsonl) as a PNG\n"
    "\n"
    "MODEL is a Hugging Face folder (config.json, *.safetensors, tokenizer.json).\n"
    "Run 'attnedit COMMAND --help' for details.\n";

int ae_cli_fail(const char *cmd) {
    fprintf(stderr, "attnedit %s: %s\n", cmd, ae_last_error());
    return 1;
}

int ae_cli_open_device(const char *cmd, const char *name, const ae_backend **be) {
    if (ae_backend_open(name, be) != AE_OK) return ae_cli_fail(cmd);
    fprintf(stderr, "device: %s (%s)\n", (*be)->name, (*be)->device);
    return 0;
}

int ae_cli_check_model(const char *cmd, const char *dir) {
    if (!ae_path_exists(dir)) {
        fprintf(stderr, "attnedit %s: MODEL folder '%s' does not exist\n", cmd, dir);
        return 1;
    }
    if (!ae_path_is_dir(dir)) {
        fprintf(stderr, "attnedit %s: MODEL '%s' is not a folder (expected a Hugging Face model "
                        "folder with config.json)\n", cmd, dir);
        return 1;
    }
    return 0;
}

// `attnedit convert ... --gpus N` (dist/launch.h): this process becomes the launcher of N ranks
// of the same command line without "--gpus N" (the command's parser never sees it). Returns -1
// when the command should run here (no --gpus, or --help: one help, with --gpus N removed from
// argv), else the exit status.
static int gpus_launch(int *argc, char **argv) {
    int gi = ae_dist_gpus_arg(*argc, argv);
    if (!gi) return -1;
    if (getenv("AE_DIST_RANK")) { // the launcher removed it: started by hand with AE_DIST_RANK
        fprintf(stderr, "attnedit: --gpus in a rank of a group (AE_DIST_RANK is set): unset "
                        "AE_DIST_RANK or leave out --gpus\n");
        return 2;
    }
    if (gi == 1 || strcmp(argv[1], "convert") != 0) {
        fprintf(stderr, "attnedit: --gpus N is an option of convert (attnedit convert ... --gpus "
                        "N)\n");
        return 2;
    }
    for (int i = 2; i < *argc; i++)
        if (!strcmp(argv[i], "--help")) {
            int drop = gi + 1 < *argc ? 2 : 1;
            for (int j = gi; j + drop <= *argc; j++) argv[j] = argv[j + drop]; // argv[argc] too
            *argc -= drop;
            return -1;
        }
    return ae_dist_launch(*argc, argv, gi, 1);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("attnedit %s\n", AE_VERSION);
        return 0;
    }
    int launched = gpus_launch(&argc, argv);
    if (launched >= 0) return launched;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "inspect")) return ae_cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return ae_cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return ae_cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return ae_cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "convert")) return ae_cmd_convert(argc - 2, argv + 2);
    if (!strcmp(cmd, "prepare-data")) return ae_cmd_prepare_data(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return ae_cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve")) return ae_cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return ae_cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "plot")) return ae_cmd_plot(argc - 2, argv + 2);
    fprintf(stderr, "attnedit: unknown command '%s'\n\n%s", cmd, k_usage);
    return 2;
}
