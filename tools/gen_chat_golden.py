#!/usr/bin/env python3
"""Writes tests/fixtures/serve/chat_golden.json: chat prompts rendered by transformers'
apply_chat_template with the Qwen3 template (tests/fixtures/serve/tokenizer_config_qwen3.json,
the one in Qwen3's tokenizer_config.json), the reference that test_serve_chat holds
serve/chat.c to, and tests/fixtures/serve/pyjson_golden.json: JSON texts and what
json.dumps(json.loads(text), ensure_ascii=False) makes of them (serve/pyjson.c, the tojson
of the template's tool list).

    python3 tools/gen_chat_golden.py QWEN3_TOKENIZER_DIR   # needs transformers (tested: 5.17.0)

Each chat case: messages (as the test hands them to ae_chat_render), tools_json (the tools
list's JSON text, or null: the test rewrites it as the server does), enable_thinking, and
expected (the rendered prompt).
"""
import json
import random
import struct
import sys
from pathlib import Path

from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/serve"

WEATHER = ('{"type": "function", "function": {"name": "get_weather", "description": '
           '"Weather in a city, \\"quoted\\" \\u00e9t\\u00e9 \\ud83c\\udf1e", "parameters": '
           '{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer",'
           '"minimum":1,"maximum":7.0,"default":1e-5}},"required":["city"]}}}')
CLOCK = '{"type":"function","function":{"name":"now","parameters":{},"x":1,"x":2}}'

CASES = [
    # without tools (the cases of the first golden file, made with jinja2 directly)
    dict(messages=[{"role": "user", "content": "Hello!"}]),
    dict(messages=[{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": "2+2?"}], enable_thinking=False),
    dict(messages=[{"role": "user", "content": "a"},
                   {"role": "assistant", "content": "<think>\nr1\n</think>\n\nb"},
                   {"role": "user", "content": "c"}]),
    dict(messages=[{"role": "user", "content": "a"},
                   {"role": "assistant", "content": "<think>\nmy reasoning\n</think>\n\nanswer"}]),
    dict(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
                   {"role": "assistant", "content": "plain"}, {"role": "system", "content": "S2"},
                   {"role": "user", "content": "u2"}]),
    dict(messages=[{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "x</think>\n\ny"},
                   {"role": "assistant", "content": "z"}]),
    dict(messages=[{"role": "user", "content": "Unicode: héllo 日本 🎉\nline2"}]),
    # tools in the system block, with and without a system message
    dict(tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}]),
    dict(tools=[WEATHER, CLOCK], messages=[{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Time and weather?"}],
         enable_thinking=False),
    # a whole tool round: calls (arguments a string; a second call; content before a call),
    # consecutive tool messages in one user turn, the answer after them
    dict(tools=[WEATHER], messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                          "arguments": "{\"city\": \"Paris\"}"}},
                        {"type": "function", "function": {"name": "get_weather",
                                                          "arguments": "{\"city\":\"Rome\"}"}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "Paris sunny, Rome rain."},
        {"role": "user", "content": "Thanks"}]),
    dict(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me check.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                          "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "content": "snow"}]),
    # reasoning after the last query: kept for the turn that has it, the tool turn in between
    dict(tools=[CLOCK], messages=[
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": "<think>\nneed the clock\n</think>\n\n",
         "tool_calls": [{"type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "content": "12:00"},
        {"role": "assistant", "content": "<think>\n\n</think>\n\nNoon."}]),
    # reasoning_content given as a field (the content is then not split)
    dict(messages=[
        {"role": "user", "content": "Q"},
        {"role": "assistant", "reasoning_content": "\nthought\n", "content": "\n\nA"}]),
    dict(messages=[
        {"role": "user", "content": "Q"},
        {"role": "assistant", "reasoning_content": "", "content": "A </think> B"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "reasoning_content": "r", "content": "A2"},
        {"role": "assistant", "reasoning_content": "", "content": "A3"}]),
    # a user message that is a tool_response wrapper does not count as the last query
    dict(messages=[
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>t1</think>A"},
        {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
        {"role": "assistant", "content": "<think>t2</think>B"}]),
    # a tool message first; a tool message last
    dict(messages=[{"role": "tool", "content": "orphan"}, {"role": "user", "content": "u"}]),
]


def render(tok, case):
    msgs = json.loads(json.dumps(case["messages"]))  # tool call arguments: strings, as OpenAI sends
    tools = [json.loads(t) for t in case["tools"]] if case.get("tools") else None
    return tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True,
                                   enable_thinking=case.get("enable_thinking", True))


def pyjson_cases():
    rnd = random.Random(7)
    texts = ['1.0', '1e400', '-1e400', '-0.0', '0.0', '1E5', '-0', '0.1', '1e16', '1e15', '1e-5',
             '0.0001', '123456.789e3', '5e-324', '2.5e-5', '1.7976931348623157e308', '1e23',
             '123456789012345678901234567890', '[]', '{}', ' [ 1 , 2.50 ,{"a":-0,"b":[true,false,null]}] ',
             '{"a":1,"a":2,"b":3,"a":4}', '{"a":{"x":1,"x":{"y":2}},"b":[{"c":1,"c":1.5}]}',
             '"\\u00e9\\ud83d\\ude00 \\u0001\\u001f \\" \\\\ \\/ \\b\\f\\n\\r\\t \u007f é 日本"',
             '{"":"","\\u0000":0}', '[[[[[]]]]]']
    for e in range(-1074, 1024, 7):
        texts.append(repr(2.0 ** e))
        texts.append('%.20e' % (-(2.0 ** e)))
    for _ in range(400):
        b = rnd.getrandbits(64)
        f = struct.unpack('<d', struct.pack('<Q', b))[0]
        if f == f and abs(f) != float('inf'):
            texts.append('%.17g' % f)
    for _ in range(200):
        texts.append(repr(round(rnd.uniform(-1000, 1000), rnd.randint(0, 6))))
    return [{"text": t, "expected": json.dumps(json.loads(t), ensure_ascii=False)} for t in texts]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    ours = json.loads((OUT / "tokenizer_config_qwen3.json").read_text())["chat_template"]
    if tok.chat_template != ours:
        sys.exit("the tokenizer's chat_template differs from tokenizer_config_qwen3.json's")
    out = []
    for case in CASES:
        out.append({"messages": case["messages"],
                    "tools_json": "[" + ", ".join(case["tools"]) + "]" if case.get("tools") else None,
                    "enable_thinking": case.get("enable_thinking", True),
                    "expected": render(tok, case)})
    (OUT / "chat_golden.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    (OUT / "pyjson_golden.json").write_text(json.dumps(pyjson_cases(), indent=0, ensure_ascii=False) + "\n")
    print(f"{len(out)} chat cases, {len(pyjson_cases())} JSON cases")


if __name__ == "__main__":
    main()
