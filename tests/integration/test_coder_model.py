"""The opt-in embedded:coder-1.5b as converted by ``make capable-model``: skipped where it was not
(it is never downloaded or converted by a test); where it was, only its tokenizer is loaded."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def coder_dir():
    from characterlab.models import embedded

    folder = embedded.cache_root() / "models" / embedded.CODER_FOLDER
    if not (folder.is_dir() and embedded._coder_manifest_ok(folder, verify_weights=False)):
        pytest.skip("embedded:coder-1.5b is not converted here (opt-in: make capable-model)")
    return folder


def test_the_converted_template_asks_for_single_braces(coder_dir):
    from transformers import AutoTokenizer

    from characterlab.agentic.tool_calls import render_prompt, supports_tools
    from characterlab.agentic.world import TOOLS
    from characterlab.models import embedded

    manifest = json.loads((coder_dir / embedded.MANIFEST).read_text())
    assert manifest["chat_template"]["mended"] == 1 and manifest["gguf_sha256"] == embedded.CODER_SOURCE.sha256
    tok = AutoTokenizer.from_pretrained(coder_dir)
    assert supports_tools(tok)
    prompt = render_prompt(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                           [TOOLS["send_email"].schema()])
    assert '{"name": <function-name>, "arguments": <args-json-object>}' in prompt and '{{"name"' not in prompt
