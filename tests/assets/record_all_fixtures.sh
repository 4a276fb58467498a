#!/usr/bin/env bash
# Records every replay fixture in tests/fixtures through the real probes (as root, after
# `cargo xtask build` and `cargo xtask test`'s venv). Then:
#   LLMPROBE_UPDATE_GOLDEN=1 cargo test --release -p llmprobe-tests --test replay
# and review the golden diff.
set -euo pipefail
cd "$(dirname "$0")/../.."
R="python3 tests/assets/record_fixture.py"
C=tests/assets/clients
PY='{python}'
rec() { echo "== $1"; $R "$@" | tail -1; }

# OpenAI chat completions (issue 2 set)
rec openai_python_tls_stream_usage -- $PY $C/openai_client.py --base-url {tls_url} --ca {ca} --stream --include-usage --calls 2
rec openai_python_plain_non_stream -- $PY $C/openai_client.py --base-url {plain_url}
rec openai_python_tls_abort chunks=10 gap=100 -- $PY $C/openai_client.py --base-url {tls_url} --ca {ca} --stream --abort-after 2 --client sync
rec openai_python_plain_429 -- $PY $C/openai_client.py --base-url {plain_url} --header x-test-status=429 --allow-http-error
rec node_fetch_tls_stream -- node $C/node_fetch.mjs --url {tls_url} --model node-model --stream --calls 2
rec curl_plain_stream_and_health comms=curl -- bash -c 'curl -s -N -H "Authorization: Bearer $OPENAI_API_KEY" -H "content-type: application/json" -d "{\"model\":\"curl-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" {plain_url}/chat/completions >/dev/null; curl -s {plain_url}/../health >/dev/null'
# OpenAI chat: reasoning, tools, errors, encodings
rec openai_reasoning_content -- $PY $C/openai_client.py --base-url {plain_url} --stream --include-usage --reasoning 2
rec openai_reasoning_field_vllm -- $PY $C/openai_client.py --base-url {plain_url} --stream --include-usage --reasoning 2 --header x-test-reasoning-field=reasoning
rec openai_tool_call_stream -- $PY $C/openai_client.py --base-url {tls_url} --ca {ca} --stream --include-usage --header x-test-tool-call=1
rec openai_finish_length -- $PY $C/openai_client.py --base-url {plain_url} --stream --include-usage --header x-test-finish=length
rec openai_stream_truncated -- $PY $C/openai_client.py --base-url {plain_url} --stream --header x-test-truncate-after=2 --client sync
rec openai_stream_error -- $PY $C/openai_client.py --base-url {plain_url} --stream --header x-test-stream-error-after=2 --allow-http-error
rec openai_503_retry_after -- $PY $C/openai_client.py --base-url {plain_url} --header x-test-status=503 --allow-http-error
rec openai_gzip_keepalive_comments -- $PY $C/http_client.py --url {plain_base} --dialect chat --stream --header x-test-encoding=gzip --header x-test-keepalive=1
rec openai_zstd_stream -- $PY $C/http_client.py --url {tls_base} --ca {ca} --dialect chat --stream --header x-test-encoding=zstd
rec openai_completions_stream -- $PY $C/http_client.py --url {plain_base} --dialect completions --stream
rec openai_embeddings -- $PY $C/http_client.py --url {plain_base} --dialect embeddings
rec openai_responses_reasoning -- $PY $C/http_client.py --url {tls_base} --ca {ca} --dialect responses --stream --header x-test-reasoning-chunks=2
# Other dialects
rec anthropic_tls_stream_thinking -- $PY $C/anthropic_client.py --base-url {tls_base} --ca {ca} --stream --thinking 2
rec anthropic_plain_non_stream -- $PY $C/anthropic_client.py --base-url {plain_base}
rec anthropic_stream_error -- $PY $C/anthropic_client.py --base-url {plain_base} --stream --header x-test-stream-error-after=2 --allow-http-error
rec gemini_sse_thoughts -- $PY $C/http_client.py --url {plain_base} --dialect gemini --model gemini-2.5-flash --stream --header x-test-reasoning-chunks=2
rec gemini_json_array_tls -- $PY $C/http_client.py --url {tls_base} --ca {ca} --dialect gemini-array --model gemini-2.5-pro --stream
rec gemini_non_stream -- $PY $C/http_client.py --url {plain_base} --dialect gemini --model gemini-2.0-flash
rec ollama_chat_thinking -- $PY $C/http_client.py --url {plain_base} --dialect ollama --model qwen3 --stream --header x-test-reasoning-chunks=2
rec ollama_generate -- $PY $C/http_client.py --url {plain_base} --dialect ollama-generate --model llama3 --stream
rec dashscope_incremental_reasoning -- $PY $C/http_client.py --url {tls_base} --ca {ca} --dialect dashscope --model qwen-plus --stream --header x-test-reasoning-chunks=2
rec dashscope_whole_text_events -- $PY $C/http_client.py --url {plain_base}/api/v1/services/aigc/text-generation/generation --stream --header X-DashScope-SSE=enable --json '{"model":"qwen-max","input":{"messages":[{"role":"user","content":"Say hello to the test server"}]},"parameters":{"result_format":"message","incremental_output":false}}'
# Inference server role on a real ASGI stack
rec asgi_server_role asgi=1 -- $PY $C/openai_client.py --base-url {asgi_url} --stream --include-usage --calls 2
