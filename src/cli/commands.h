// Subcommands of the attnedit CLI. Each returns the process exit status: 0 on success, 1 when
// the input is bad (message already printed), 2 for usage errors.
#ifndef AE_CLI_COMMANDS_H
#define AE_CLI_COMMANDS_H

int ae_cmd_inspect(int argc, char **argv);
int ae_cmd_tokenize(int argc, char **argv);
int ae_cmd_generate(int argc, char **argv);
int ae_cmd_eval(int argc, char **argv);
int ae_cmd_eval_kl(int argc, char **argv);
int ae_cmd_eval_tasks(int argc, char **argv);
int ae_cmd_eval_passkey(int argc, char **argv);
int ae_cmd_convert(int argc, char **argv);
int ae_cmd_prepare_data(int argc, char **argv);
int ae_cmd_export(int argc, char **argv);
int ae_cmd_serve(int argc, char **argv);
int ae_cmd_bench(int argc, char **argv);
int ae_cmd_plot(int argc, char **argv);

// Prints "attnedit <cmd>: <last error>" to stderr and returns 1.
int ae_cli_fail(const char *cmd);
// Checks that MODEL names an existing folder; prints "attnedit <cmd>: ..." and returns 1 if not,
// else returns 0.
int ae_cli_check_model(const char *cmd, const char *dir);

// Opens the backend --device names (NULL: a CUDA GPU when present, else the CPU) and says on
// stderr which device runs ("device: cuda:0 (NVIDIA H200, 139.8 GiB)"). Returns 0, or prints
// the error and returns 1.
typedef struct ae_backend ae_backend;
int ae_cli_open_device(const char *cmd, const char *name, const ae_backend **be);

#endif
