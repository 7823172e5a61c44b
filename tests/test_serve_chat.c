// The Qwen3 chat template by its semantics (serve/chat.c) against transformers'
// apply_chat_template with the real template (tests/fixtures/serve/chat_golden.json, made by
// tools/gen_chat_golden.py with Qwen3's tokenizer_config.json): system/user/assistant turns,
// reasoning kept or dropped (from <think> or reasoning_content), enable_thinking false,
// Unicode, tool lists (their JSON rewritten as tojson does, serve/pyjson.c), tool calls and
// tool responses. And template detection: Qwen3 recognised, others refused.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "serve/chat.h"
#include "serve/tools.h"
#include "util/testutil.h"

// One golden case's messages as the server hands them to ae_chat_render.
static int read_case(const cJSON *ms, ae_chat_msg *msg, ae_chat_call *calls, int max_calls) {
    int i = 0, used = 0;
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
        const cJSON *rc = cJSON_GetObjectItem(m, "reasoning_content");
        msg[i] = (ae_chat_msg){.role = cJSON_GetObjectItem(m, "role")->valuestring,
                               .content = cJSON_GetObjectItem(m, "content")->valuestring,
                               .reasoning = rc ? rc->valuestring : NULL};
        const cJSON *tc = cJSON_GetObjectItem(m, "tool_calls");
        msg[i].calls = calls + used;
        for (const cJSON *t = tc ? tc->child : NULL; t; t = t->next) {
            assert_true(used < max_calls);
            const cJSON *f = cJSON_GetObjectItem(t, "function");
            calls[used++] = (ae_chat_call){cJSON_GetObjectItem(f, "name")->valuestring,
                                           cJSON_GetObjectItem(f, "arguments")->valuestring};
            msg[i].n_calls++;
        }
    }
    return i;
}

static void test_golden(void **st) {
    (void)st;
    char *text = NULL;
    size_t n = 0;
    assert_int_equal(ae_file_read_all(ae_test_src("tests/fixtures/serve/chat_golden.json"), &text, &n), AE_OK);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    assert_non_null(j);
    int k = 0, with_tools = 0, with_calls = 0;
    for (const cJSON *c = j->child; c; c = c->next, k++) {
        ae_chat_msg msg[16];
        ae_chat_call calls[16];
        int nm = read_case(cJSON_GetObjectItem(c, "messages"), msg, calls, 16);
        for (int i = 0; i < nm; i++) with_calls += msg[i].n_calls;
        ae_chat_opts o = {.enable_thinking = cJSON_IsTrue(cJSON_GetObjectItem(c, "enable_thinking"))};
        const cJSON *tj = cJSON_GetObjectItem(c, "tools_json");
        char **tools = NULL;
        if (cJSON_IsString(tj)) {
            assert_int_equal(ae_tools_dump_list(tj->valuestring, strlen(tj->valuestring), &tools, &o.n_tools), AE_OK);
            o.tools = (const char *const *)tools;
            with_tools++;
        }
        char *out = NULL;
        assert_int_equal(ae_chat_render(msg, nm, &o, &out), AE_OK);
        const char *want = cJSON_GetObjectItem(c, "expected")->valuestring;
        if (strcmp(out, want)) printf("case %d:\n got: %s\nwant: %s\n", k, out, want);
        assert_string_equal(out, want);
        free(out);
        ae_tools_free_list(tools, o.n_tools);
    }
    printf("%d chat renderings equal transformers' apply_chat_template (%d with tools, %d tool "
           "calls)\n", k, with_tools, with_calls);
    assert_true(with_tools >= 4 && with_calls >= 4);
    cJSON_Delete(j);
}

static void test_refusals(void **st) {
    (void)st;
    ae_chat_msg bad[] = {{.role = "function", .content = "x"}};
    ae_chat_opts o = {.enable_thinking = 1};
    char *out = NULL;
    assert_int_equal(ae_chat_render(bad, 1, &o, &out), AE_ERR_ARG);
    assert_int_equal(ae_chat_render(bad, 0, &o, &out), AE_ERR_ARG);
    // detection: the micro model has no template; the fixture has Qwen3's; another is refused
    assert_int_equal(ae_chat_detect(ae_test_src("models/qwen3-micro")), AE_CHAT_NONE);
    char *dir = ae_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *cfg = NULL;
    size_t n = 0;
    assert_int_equal(ae_file_read_all(ae_test_src("tests/fixtures/serve/tokenizer_config_qwen3.json"), &cfg, &n), AE_OK);
    assert_int_equal(ae_test_write_file(path, cfg, n), 0);
    free(cfg);
    assert_int_equal(ae_chat_detect(dir), AE_CHAT_QWEN3);
    const char *other = "{\"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}";
    assert_int_equal(ae_test_write_file(path, other, strlen(other)), 0);
    assert_int_equal(ae_chat_detect(dir), AE_CHAT_UNSUPPORTED);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_refusals),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
