// The Qwen3 chat template by its semantics (serve/chat.c) against renderings of the real
// template by jinja2 (tests/fixtures/serve/chat_golden.json, made with the template of
// Qwen3's tokenizer_config.json): system/user/assistant turns, reasoning kept or dropped,
// enable_thinking false, Unicode. And template detection: Qwen3 recognised, others refused.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "serve/chat.h"
#include "util/testutil.h"

static void test_golden(void **st) {
    (void)st;
    char *text = NULL;
    size_t n = 0;
    assert_int_equal(ae_file_read_all(ae_test_src("tests/fixtures/serve/chat_golden.json"), &text, &n), AE_OK);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    assert_non_null(j);
    int k = 0;
    for (const cJSON *c = j->child; c; c = c->next, k++) {
        const cJSON *ms = cJSON_GetObjectItem(c, "messages");
        int nm = cJSON_GetArraySize(ms), i = 0;
        ae_chat_msg msg[16];
        for (const cJSON *m = ms->child; m; m = m->next, i++) {
            msg[i].role = cJSON_GetObjectItem(m, "role")->valuestring;
            msg[i].content = cJSON_GetObjectItem(m, "content")->valuestring;
        }
        char *out = NULL;
        assert_int_equal(ae_chat_render(msg, nm, cJSON_IsTrue(cJSON_GetObjectItem(c, "enable_thinking")), &out), AE_OK);
        const char *want = cJSON_GetObjectItem(c, "expected")->valuestring;
        if (strcmp(out, want)) printf("case %d:\n got: %s\nwant: %s\n", k, out, want);
        assert_string_equal(out, want);
        free(out);
    }
    printf("%d chat renderings equal jinja2's\n", k);
    cJSON_Delete(j);
}

static void test_refusals(void **st) {
    (void)st;
    ae_chat_msg bad[] = {{"tool", "x"}};
    char *out = NULL;
    assert_int_equal(ae_chat_render(bad, 1, 1, &out), AE_ERR_ARG);
    assert_int_equal(ae_chat_render(bad, 0, 1, &out), AE_ERR_ARG);
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
