// attnedit export --model S --format hf --out DIR [--dtype bf16|f16|f32] [--shard-size BYTES]
//                 [--engine transformers|sglang|vllm] [--force]
// attnedit export --model M --format gguf --out FILE.gguf [--dtype bf16|f16|f32] [--force]
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "export/export.h"

static const char k_help[] =
    "usage: attnedit export --model S --format hf --out DIR [--dtype bf16|f16|f32]\n"
    "                       [--shard-size BYTES] [--engine transformers|sglang|vllm] [--force]\n"
    "       attnedit export --model M --format gguf --out FILE.gguf [--dtype bf16|f16|f32] [--force]\n"
    "  Writes the student S (made by 'attnedit convert') as a folder an inference engine loads\n"
    "  (docs/EXPORT.md):\n"
    "    MLA student (every layer MLA, dense teacher) -> DeepseekV3ForCausalLM: transformers,\n"
    "      vLLM and SGLang load it with their DeepSeek-V3 code;\n"
    "    MLA student of a Qwen3-MoE teacher -> DeepseekV2ForCausalLM with softmax routing (with\n"
    "      norm_topk_prob: transformers needs trust_remote_code=True for the renormalising\n"
    "      router written into DIR);\n"
    "    GateSWA student (dense teacher) -> AttneditGateSWAForCausalLM: transformers with\n"
    "      trust_remote_code=True (the two Python files are written into DIR).\n"
    "  Teachers, mixed MLA students and GateSWA students of MoE teachers are refused (saying\n"
    "  why). attnedit loads exported dense students too. --dtype: tensor dtype (default bf16, rounded to nearest even;\n"
    "  f32 keeps the values exactly). --shard-size: largest safetensors file (default 5e9;\n"
    "  also 500MB, 2GiB, ...), with model.safetensors.index.json when there are several.\n"
    "  --force replaces an existing DIR. DIR appears whole or not at all.\n"
    "  --engine: the engine the folder is for where engines disagree; only MoE students differ:\n"
    "    transformers / sglang (default) write n_shared_experts 0, vllm writes null (vLLM\n"
    "    builds a shared expert for any integer and then misses its weights; transformers >= 5\n"
    "    refuses null). GateSWA students are refused for vllm.\n"
    "  --format gguf writes one GGUF file for llama.cpp: a teacher as qwen3 / qwen3moe, an MLA\n"
    "  student (every layer MLA, dense or MoE teacher) as deepseek2; GateSWA and mixed students\n"
    "  are refused (saying why). Norms stay f32, matrices take --dtype (default bf16). --force\n"
    "  replaces an existing FILE; FILE appears whole or not at all.\n";

// "5e9", "5000000000", "500MB", "2GiB" -> bytes.
static ae_status parse_size(const char *s, const char *opt, uint64_t *out) {
    static const struct {
        const char *unit;
        double mul;
    } units[] = {{"", 1},      {"B", 1},       {"KB", 1e3},           {"MB", 1e6},
                 {"GB", 1e9},  {"KiB", 1024.0}, {"MiB", 1048576.0},    {"GiB", 1073741824.0}};
    char *end;
    errno = 0;
    double v = (isdigit((unsigned char)s[0]) || s[0] == '.') ? strtod(s, &end) : NAN;
    double mul = 0;
    for (size_t i = 0; isfinite(v) && i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].unit)) mul = units[i].mul;
    if (!isfinite(v) || errno == ERANGE || mul == 0)
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a size in bytes (e.g. 5e9, 500MB, 2GiB)", opt, s);
    v *= mul;
    if (!(v >= 1) || v > 1e18 || floor(v) != v)
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a whole number of bytes in [1, 1e18]", opt, s);
    *out = (uint64_t)v;
    return AE_OK;
}

int ae_cmd_export(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "export"};
    const char *model = NULL, *format = NULL, *out = NULL, *v;
    ae_export_opts o = {.dtype = AE_DT_BF16, .shard_size = AE_EXPORT_DEFAULT_SHARD};
    int r, shard_given = 0, engine_given = 0;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &model)) || (r = ae_args_value(&a, "--format", &format)) ||
            (r = ae_args_value(&a, "--out", &out))) {
        } else if ((r = ae_args_value(&a, "--dtype", &v))) {
            if (r > 0) st = ae_export_parse_dtype(v, "--dtype", &o.dtype);
        } else if ((r = ae_args_value(&a, "--engine", &v))) {
            if (r > 0) st = ae_export_parse_engine(v, "--engine", &o.engine);
            engine_given = 1;
        } else if ((r = ae_args_value(&a, "--shard-size", &v))) {
            if (r > 0) st = parse_size(v, "--shard-size", &o.shard_size);
            shard_given = 1;
        } else if (ae_args_flag(&a, "--force")) {
            o.force = 1;
        } else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("export");
    }
    if (!model || !format || !out) {
        fprintf(stderr, "attnedit export: need --model, --format and --out\n%s", k_help);
        return 2;
    }
    int gguf = !strcmp(format, "gguf");
    if (strcmp(format, "hf") != 0 && !gguf) {
        fprintf(stderr, "attnedit export: --format '%s': expected 'hf' (Hugging Face folder) or "
                        "'gguf' (llama.cpp)\n", format);
        return 1;
    }
    if (gguf && shard_given) {
        fprintf(stderr, "attnedit export: --shard-size applies to --format hf; a GGUF file is "
                        "written whole\n");
        return 1;
    }
    if (gguf && engine_given) {
        fprintf(stderr, "attnedit export: --engine applies to --format hf; a GGUF file is for "
                        "llama.cpp\n");
        return 1;
    }
    if (ae_cli_check_model("export", model)) return 1;
    ae_export_report rep;
    if ((gguf ? ae_export_gguf(model, out, &o, &rep) : ae_export_hf(model, out, &o, &rep)) != AE_OK)
        return ae_cli_fail("export");
    fprintf(stderr, "exported %s as %s (%s): %lld tensors, %.1f MiB in %d file%s\nwrote %s\n",
            model, rep.architecture, ae_export_dtype_name(o.dtype), (long long)rep.n_tensors,
            rep.total_bytes / 1048576.0, rep.n_shards, rep.n_shards == 1 ? "" : "s", out);
    return 0;
}
