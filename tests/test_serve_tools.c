// Tool calling in `attnedit serve` (serve/pyjson.c, serve/tools.c, serve/api_chat.c):
//   - JSON rewritten as Python's json.dumps(json.loads(text), ensure_ascii=False) equals
//     Python's output on tests/fixtures/serve/pyjson_golden.json (tools/gen_chat_golden.py:
//     floats at every 7th power of two and random bit patterns, ints beyond 2^64, repeated
//     keys, escapes, Unicode); malformed JSON is refused with the byte where it went wrong;
//   - a reply's <tool_call> blocks are read as vLLM's hermes parser reads them (content before
//     the first, unclosed last block, repeated keys, any malformed block: no tool calls);
//   - the held-back tail of a stream that could still become a tool call;
//   - a chat request with tools renders transformers' prompt (the golden file's case), the
//     reply becomes tool_calls with finish_reason "tool_calls", whole and streamed, and the
//     tool options are checked (tool_choice, parallel_tool_calls, malformed tools: 400s).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "serve/api.h"
#include "serve/pyjson.h"
#include "serve/tools.h"
#include "util/testutil.h"

static cJSON *read_json(const char *rel) {
    char *text = NULL;
    size_t n = 0;
    assert_int_equal(ae_file_read_all(ae_test_src(rel), &text, &n), AE_OK);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    assert_non_null(j);
    return j;
}

static void test_pyjson_golden(void **st) {
    (void)st;
    cJSON *j = read_json("tests/fixtures/serve/pyjson_golden.json");
    int k = 0;
    for (const cJSON *c = j->child; c; c = c->next, k++) {
        const char *in = cJSON_GetObjectItem(c, "text")->valuestring;
        const char *want = cJSON_GetObjectItem(c, "expected")->valuestring;
        char *out = NULL;
        size_t used = 0;
        assert_int_equal(ae_pyjson_dump(in, strlen(in), &out, &used), AE_OK);
        if (strcmp(out, want)) printf("json.dumps(json.loads(%s)): got %s, want %s\n", in, out, want);
        assert_string_equal(out, want);
        assert_int_equal(used, strlen(in)); // trailing whitespace read too
        free(out);
        used = 0; // ae_pyjson_span reads the same value without writing it
        assert_int_equal(ae_pyjson_span(in, strlen(in), &used), AE_OK);
        assert_int_equal(used, strlen(in));
    }
    printf("%d JSON texts written as Python writes them\n", k);
    assert_true(k > 1000);
    cJSON_Delete(j);
}

static void test_pyjson_malformed(void **st) {
    (void)st;
    const char *bad[] = {"", "   ", "[1,", "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "{1:2}", "\"abc",
                         "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
                         "tru", "nul", "-", "1.", "1e", "1e+", ".5", "NaN", "Infinity", "}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = (char *)1;
        ae_status s = ae_pyjson_dump(bad[i], strlen(bad[i]), &out, NULL);
        if (s != AE_ERR_FORMAT) printf("accepted: '%s'\n", bad[i]);
        assert_int_equal(s, AE_ERR_FORMAT);
        assert_null(out);
        assert_non_null(strstr(ae_last_error(), "byte"));
        assert_int_equal(ae_pyjson_span(bad[i], strlen(bad[i]), NULL), AE_ERR_FORMAT);
    }
    // nesting: 1000 levels read, 1001 refused
    for (int depth = 1000; depth <= 1001; depth++) {
        char *t = malloc(2 * (size_t)depth + 1);
        memset(t, '[', (size_t)depth);
        memset(t + depth, ']', (size_t)depth);
        t[2 * depth] = 0;
        char *out = NULL;
        assert_int_equal(ae_pyjson_dump(t, 2 * (size_t)depth, &out, NULL), depth <= 1000 ? AE_OK : AE_ERR_FORMAT);
        assert_int_equal(ae_pyjson_span(t, 2 * (size_t)depth, NULL), depth <= 1000 ? AE_OK : AE_ERR_FORMAT);
        free(out);
        free(t);
    }
    // one value, then whatever follows: *used says where it ended
    char *out = NULL;
    size_t used = 0;
    assert_int_equal(ae_pyjson_dump("{\"a\": 1}  , 2", 13, &out, &used), AE_OK);
    assert_string_equal(out, "{\"a\": 1}");
    assert_int_equal(used, 10);
    free(out);
    used = 0;
    assert_int_equal(ae_pyjson_span("{\"a\": 1}  , 2", 13, &used), AE_OK);
    assert_int_equal(used, 10);
}

static void test_pyjson_member(void **st) {
    (void)st;
    const char *t = " {\"a\": [1, {\"a\": 0}], \"b\\u0021\": \"x\", \"a\" : {\"z\": 2} } ";
    const char *v = NULL;
    size_t n = 0;
    assert_int_equal(ae_pyjson_member(t, strlen(t), "a", 0, &v, &n), 1);
    assert_int_equal(n, strlen("[1, {\"a\": 0}]"));
    assert_memory_equal(v, "[1, {\"a\": 0}]", n);
    assert_int_equal(ae_pyjson_member(t, strlen(t), "a", 1, &v, &n), 1);
    assert_memory_equal(v, "{\"z\": 2}", n);
    assert_int_equal(ae_pyjson_member(t, strlen(t), "b!", 1, &v, &n), 1); // keys compared decoded
    assert_memory_equal(v, "\"x\"", n);
    assert_int_equal(ae_pyjson_member(t, strlen(t), "c", 1, &v, &n), 0);
    assert_int_equal(ae_pyjson_member("[1]", 3, "a", 1, &v, &n), -1);
    assert_int_equal(ae_pyjson_member("{\"a\":", 5, "a", 1, &v, &n), -1);
    assert_int_equal(ae_pyjson_member("{}", 2, "a", 1, &v, &n), 0);
}

// The calls of a reply: "name|arguments" per call joined by ";", and the content length.
static int parse(const char *text, char *calls, size_t cap, size_t *content_len) {
    ae_tool_calls tc;
    int r = ae_tool_calls_parse(text, strlen(text), &tc);
    calls[0] = 0;
    for (int k = 0; k < tc.n; k++)
        snprintf(calls + strlen(calls), cap - strlen(calls), "%s%s|%s", k ? ";" : "",
                 tc.calls[k].name, tc.calls[k].arguments);
    *content_len = tc.content_len;
    ae_tool_calls_free(&tc);
    return r;
}

static void test_tool_calls_parse(void **st) {
    (void)st;
    char c[512];
    size_t content = 99;
    assert_int_equal(parse("no calls here", c, sizeof c, &content), 0);
    assert_int_equal(parse("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\":1.0,\"b\":[1,2e0]}}\n</tool_call>",
                           c, sizeof c, &content), 1);
    assert_string_equal(c, "f|{\"a\": 1.0, \"b\": [1, 2.0]}");
    assert_int_equal(content, 0);
    // content before the first call; text between and after calls dropped; the last unclosed
    const char *two = "Sure.\n<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call> and "
                      "<tool_call>\n{\"arguments\": \"s\", \"name\": \"b\"}";
    assert_int_equal(parse(two, c, sizeof c, &content), 1);
    assert_string_equal(c, "a|{};b|\"s\"");
    assert_int_equal(content, 6);
    // repeated keys: the last value (json.loads)
    assert_int_equal(parse("<tool_call>{\"name\":\"x\",\"name\":\"y\",\"arguments\":1,\"arguments\":{\"k\":null}}</tool_call>",
                           c, sizeof c, &content), 1);
    assert_string_equal(c, "y|{\"k\": null}");
    // any malformed block: no calls, the whole reply is content
    const char *bad[] = {"<tool_call>{\"name\": f}</tool_call>",
                         "<tool_call>{\"name\": \"f\"}</tool_call>",                  // no arguments
                         "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",   // name not a string
                         "<tool_call>[\"f\", {}]</tool_call>",
                         "<tool_call></tool_call>",
                         "<tool_call>{\"name\":\"f\",\"arguments\":{}} x</tool_call>", // trailing text
                         "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call><tool_call>{</tool_call>",
                         "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":"};              // cut off
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int r = parse(bad[i], c, sizeof c, &content);
        if (r != 0) printf("read as calls: %s\n", bad[i]);
        assert_int_equal(r, 0);
        assert_string_equal(c, "");
    }
    // the stream's limit: before the first <tool_call>, less a tail that could begin one
    struct { const char *text; size_t limit; } lim[] = {
        {"abc", 3}, {"abc<", 3}, {"abc<tool_c", 3}, {"abc<tool_call>{", 3}, {"<tool_call>", 0},
        {"a<b", 3}, {"x<tool_callX", 12}, {"<tool_call", 0}, {"", 0}};
    for (size_t i = 0; i < sizeof lim / sizeof *lim; i++)
        assert_int_equal(ae_tool_calls_stream_limit(lim[i].text, strlen(lim[i].text)), lim[i].limit);
}

// ---- the API: requests with tools, replies with tool calls ----

static ae_tokenizer *g_tok;

static ae_api_ctx ctx_of(void) {
    return (ae_api_ctx){.tok = g_tok, .model_name = "m", .chat = AE_CHAT_QWEN3, .vocab = 151936,
                        .eos_id = 0, .im_end_id = -1, .max_model_len = 4096};
}

static int parse_req(const char *body, ae_api_request *q, ae_api_error *err) {
    ae_api_ctx ctx = ctx_of();
    return ae_api_parse(&ctx, AE_API_CHAT, body, strlen(body), q, err);
}

static void expect_400(const char *body, const char *param) {
    ae_api_request q;
    ae_api_error err;
    int r = parse_req(body, &q, &err);
    if (r == 0 || err.status != 400 || strcmp(err.param, param))
        printf("body %s: rc %d status %d param '%s' (%s)\n", body, r, err.status, err.param, err.message);
    assert_int_equal(r, -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.param, param);
}

// The golden case with a whole tool round (system, two calls, two tool messages, an answer, a
// new question), sent as an OpenAI request: the server's prompt is transformers'.
static void test_api_prompt(void **st) {
    (void)st;
    cJSON *g = read_json("tests/fixtures/serve/chat_golden.json");
    int checked = 0;
    for (const cJSON *c = g->child; c; c = c->next) {
        const cJSON *tj = cJSON_GetObjectItem(c, "tools_json");
        if (!cJSON_IsString(tj)) continue;
        // the body: messages as in the golden file (tool calls with string arguments), tools
        // as their text, so the floats and repeated keys reach the server as written
        char *ms = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "messages"));
        size_t cap = strlen(ms) + strlen(tj->valuestring) + 200;
        char *body = malloc(cap);
        snprintf(body, cap, "{\"messages\": %s, \"tools\": %s, \"chat_template_kwargs\": "
                 "{\"enable_thinking\": %s}}", ms, tj->valuestring,
                 cJSON_IsTrue(cJSON_GetObjectItem(c, "enable_thinking")) ? "true" : "false");
        ae_api_request q;
        ae_api_error err;
        if (parse_req(body, &q, &err)) printf("%s\n", err.message);
        assert_string_equal(q.prompt_text, cJSON_GetObjectItem(c, "expected")->valuestring);
        assert_true(q.tools && q.parallel_tools);
        ae_api_request_free(&q);
        free(body);
        free(ms);
        checked++;
    }
    assert_true(checked >= 4);
    cJSON_Delete(g);
    // tool_choice "none": no tools in the prompt, the reply not read for calls
    ae_api_request q;
    ae_api_error err;
    const char *none = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":"
                       "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}";
    assert_int_equal(parse_req(none, &q, &err), 0);
    assert_null(strstr(q.prompt_text, "# Tools"));
    assert_false(q.tools);
    ae_api_request_free(&q);
    const char *aut = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":"
                      "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"auto\","
                      "\"parallel_tool_calls\":false}";
    assert_int_equal(parse_req(aut, &q, &err), 0);
    assert_non_null(strstr(q.prompt_text, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\"}}\n</tools>"));
    assert_true(q.tools && !q.parallel_tools);
    ae_api_request_free(&q);
    // an assistant message with content null and arguments as an object (written as tojson)
    const char *obj = "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"assistant\","
                      "\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":"
                      "{\"name\":\"f\",\"arguments\":{\"a\":[1,\"\\u00e9\"]}}}]},{\"role\":\"tool\","
                      "\"tool_call_id\":\"c\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}]}";
    assert_int_equal(parse_req(obj, &q, &err), 0);
    assert_non_null(strstr(q.prompt_text, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", "
                                          "\"arguments\": {\"a\": [1, \"\xc3\xa9\"]}}\n</tool_call><|im_end|>\n"
                                          "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"));
    ae_api_request_free(&q);
    // what is refused, each naming its field
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    const char *f = "[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
    char b[512];
    snprintf(b, sizeof b, "{%s,\"tools\":%s,\"tool_choice\":\"required\"}", m, f);
    expect_400(b, "tool_choice");
    snprintf(b, sizeof b, "{%s,\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}", m, f);
    expect_400(b, "tool_choice");
    snprintf(b, sizeof b, "{%s,\"tool_choice\":\"auto\"}", m);
    expect_400(b, "tool_choice");
    snprintf(b, sizeof b, "{%s,\"tools\":{\"type\":\"function\"}}", m);
    expect_400(b, "tools");
    snprintf(b, sizeof b, "{%s,\"tools\":[{\"type\":\"code\",\"function\":{\"name\":\"f\"}}]}", m);
    expect_400(b, "tools");
    snprintf(b, sizeof b, "{%s,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]}", m);
    expect_400(b, "tools");
    snprintf(b, sizeof b, "{%s,\"tools\":%s,\"parallel_tool_calls\":1}", m, f);
    expect_400(b, "parallel_tool_calls");
    expect_400("{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"function\":{\"name\":\"f\"}}]}]}",
               "messages");
    expect_400("{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":{}}]}", "messages");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":null}]}", "messages");
    expect_400("{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":1}]}", "messages");
    expect_400("{\"messages\":[{\"role\":\"function\",\"content\":\"a\"}]}", "messages");
}

// A finished reply r of text for request q, its whole response and its final stream event.
static cJSON *respond(const ae_api_request *q, const char *text, ae_finish fin, int stream) {
    ae_req r = {0};
    r.text = (char *)text;
    r.text_len = strlen(text);
    r.finish = fin;
    r.n_out = 5;
    ae_api_ctx ctx = ctx_of();
    char *s;
    if (stream) {
        size_t to = ae_api_stream_text_to(q, &r, 1);
        s = ae_api_stream_event(&ctx, q, &r, "chatcmpl-abc0001", 1, 0, to, 0, 5, 1, 1);
        assert_true(!strncmp(s, "data: ", 6));
        memmove(s, s + 6, strlen(s + 6) + 1);
    } else {
        s = ae_api_response_json(&ctx, q, &r, "chatcmpl-abc0001", 1);
    }
    cJSON *j = cJSON_Parse(s);
    free(s);
    assert_non_null(j);
    return j;
}

static const cJSON *choice(const cJSON *j) { return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0); }

static void test_api_reply(void **st) {
    (void)st;
    ae_api_request q = {.kind = AE_API_CHAT, .tools = 1, .parallel_tools = 1};
    const char *reply = "Checking.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                        "\"Paris\", \"days\": 2.50}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", "
                        "\"arguments\": {}}\n</tool_call>";
    for (int stream = 0; stream <= 1; stream++) {
        cJSON *j = respond(&q, reply, AE_FINISH_STOP, stream);
        const cJSON *c = choice(j), *m = cJSON_GetObjectItem(c, stream ? "delta" : "message");
        assert_string_equal(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "tool_calls");
        assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, "Checking.");
        const cJSON *calls = cJSON_GetObjectItem(m, "tool_calls");
        assert_int_equal(cJSON_GetArraySize(calls), 2);
        const cJSON *c0 = cJSON_GetArrayItem(calls, 0), *f0 = cJSON_GetObjectItem(c0, "function");
        assert_string_equal(cJSON_GetObjectItem(c0, "type")->valuestring, "function");
        assert_string_equal(cJSON_GetObjectItem(c0, "id")->valuestring, "call_abc0001_0");
        assert_string_equal(cJSON_GetObjectItem(f0, "name")->valuestring, "get_weather");
        assert_string_equal(cJSON_GetObjectItem(f0, "arguments")->valuestring, "{\"city\": \"Paris\", \"days\": 2.5}");
        assert_true(stream == (cJSON_GetObjectItem(c0, "index") != NULL));
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 1), "function"), "name")->valuestring, "now");
        cJSON_Delete(j);
    }
    // no content before the call: null (whole), no content key (stream: nothing left to send)
    cJSON *j = respond(&q, "<tool_call>{\"name\":\"now\",\"arguments\":{}}</tool_call>", AE_FINISH_STOP, 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(choice(j), "message"), "content")));
    cJSON_Delete(j);
    // parallel_tool_calls false: the first call only
    q.parallel_tools = 0;
    j = respond(&q, reply, AE_FINISH_STOP, 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(choice(j), "message"), "tool_calls")), 1);
    cJSON_Delete(j);
    // a malformed call: all text, the engine's finish reason
    q.parallel_tools = 1;
    const char *broken = "Hm <tool_call>{\"name\": oops}</tool_call>";
    for (int stream = 0; stream <= 1; stream++) {
        j = respond(&q, broken, AE_FINISH_LENGTH, stream);
        const cJSON *m = cJSON_GetObjectItem(choice(j), stream ? "delta" : "message");
        assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, broken);
        assert_null(cJSON_GetObjectItem(m, "tool_calls"));
        assert_string_equal(cJSON_GetObjectItem(choice(j), "finish_reason")->valuestring, "length");
        cJSON_Delete(j);
    }
    // without tools the reply is text, whatever it holds
    q.tools = 0;
    j = respond(&q, reply, AE_FINISH_STOP, 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(choice(j), "message"), "content")->valuestring, reply);
    assert_string_equal(cJSON_GetObjectItem(choice(j), "finish_reason")->valuestring, "stop");
    cJSON_Delete(j);
    // a stream in progress: text up to the first <tool_call> (or a tail that could begin one)
    q.tools = 1;
    ae_req r = {.text = (char *)"Checking.<tool_c", .text_len = 16};
    assert_int_equal(ae_api_stream_text_to(&q, &r, 0), 9);
    r.text = (char *)reply;
    r.text_len = strlen(reply);
    assert_int_equal(ae_api_stream_text_to(&q, &r, 0), 9);
    q.tools = 0;
    assert_int_equal(ae_api_stream_text_to(&q, &r, 0), strlen(reply));
}

static int setup(void **st) {
    (void)st;
    return ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &g_tok) == AE_OK ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    ae_tokenizer_free(g_tok);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyjson_golden),   cmocka_unit_test(test_pyjson_malformed),
        cmocka_unit_test(test_pyjson_member),   cmocka_unit_test(test_tool_calls_parse),
        cmocka_unit_test(test_api_prompt),      cmocka_unit_test(test_api_reply),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, setup, teardown));
}
