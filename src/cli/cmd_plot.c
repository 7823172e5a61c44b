// attnedit plot RUN_DIR [-o FILE.png] [--log-y]
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "plot/plot.h"

static const char k_help[] =
    "usage: attnedit plot RUN_DIR [-o FILE.png] [--log-y]\n"
    "  Draws the loss curves of a distillation run (RUN_DIR/metrics.jsonl, written by 'attnedit\n"
    "  convert'; a student folder is its run folder) into one PNG, by default RUN_DIR/loss.png:\n"
    "  stage 1 loss and loss per replaced layer; stage 2 KL, feature loss (1 - cos) and top-1\n"
    "  agreement against the optimizer step (the panels the records allow). Steps repeated after\n"
    "  a resume are drawn from their last record. --log-y: log10 y axes for the losses.\n"
    "  The PNG appears whole or not at all (docs/PLOT.md).\n";

int ae_cmd_plot(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "plot"};
    const char *run = NULL, *out = NULL;
    ae_plot_opts o = {0};
    int r;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "-o", &out)) || (r = ae_args_value(&a, "--out", &out))) {
        } else if (ae_args_flag(&a, "--log-y")) {
            o.log_y = 1;
        } else if (ae_args_flag(&a, "--help") || ae_args_flag(&a, "-h")) {
            fputs(k_help, stdout);
            return 0;
        } else if (a.argv[a.i][0] != '-' && !run) {
            run = a.argv[a.i++];
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("plot");
    }
    if (!run) {
        fprintf(stderr, "attnedit plot: need RUN_DIR (a student folder with metrics.jsonl)\n%s", k_help);
        return 2;
    }
    if (ae_plot_metrics_opts(run, out, &o) != AE_OK) return ae_cli_fail("plot");
    if (out) fprintf(stderr, "wrote %s\n", out);
    else fprintf(stderr, "wrote %s/loss.png\n", run);
    return 0;
}
