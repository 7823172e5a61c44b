// The tokenizer metadata of a GGUF file, made from a model folder's tokenizer.json (+
// tokenizer_config.json, config.json) the way llama.cpp's convert_hf_to_gguf.py writes a
// byte-level BPE tokenizer with the Qwen2 pre-tokenizer:
//   tokenizer.ggml.model "gpt2", tokenizer.ggml.pre "qwen2";
//   tokenizer.ggml.tokens: the token of every id < vocab_size (ids the tokenizer does not use
//     become "[PAD<id>]");
//   tokenizer.ggml.token_type: 1 normal, 3 control (added tokens marked special, or looking like
//     "<|...|>"), 4 user-defined (other added tokens), 5 unused ([PAD<id>]);
//   tokenizer.ggml.merges: "a b" per merge (pair-form merges joined; a space inside a part
//     written as U+0120, as the converter does);
//   tokenizer.ggml.{bos,eos,unk,sep,pad,cls,mask}_token_id: tokenizer_config.json's *_token
//     (matched to added_tokens), then config.json's *_token_id for the ones still unset;
//   tokenizer.ggml.add_bos_token / add_eos_token: false with the ByteLevel post-processor,
//     else tokenizer_config.json's add_*_token when present;
//   tokenizer.chat_template: tokenizer_config.json's chat_template, else chat_template.jinja.
// Refused (AE_ERR_UNSUPPORTED, saying why): a tokenizer that is not byte-level BPE with exactly
// Qwen2's pre-tokenizer regex (llama.cpp would split text differently), or a post-processor
// other than ByteLevel; an id >= vocab_size.
#ifndef AE_EXPORT_GGUF_VOCAB_H
#define AE_EXPORT_GGUF_VOCAB_H

#include "export/gguf_write.h"

// Reads the tokenizer of model_dir and sets the tokenizer.* metadata of g.
ae_status ae_gguf_write_vocab(ae_gguf *g, const char *model_dir, int vocab_size);

#endif
