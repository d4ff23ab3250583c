"""The small codes `make chaos` runs. Each execution makes a random marker, logs it as
`chaos-execution <marker>` before anything else, sleeps as its `sleep` parameter says and
returns `{"execution": <marker>}`: a run executed twice leaves two markers in its logs, or a
result whose marker is not in its logs (see report.py)."""

from __future__ import annotations

import requests

MARKER_PREFIX = "chaos-execution "
PROJECT = "00000000-0000-4000-8000-0000000c4a05"
TIMEOUT = 10  # seconds: a run cut off by a fault cannot hide behind a long timeout

SOURCES = {
    "python": (
        "import time\nimport uuid\n\n\n"
        "def Run(engine):\n"
        "    marker = uuid.uuid4().hex\n"
        f"    engine.log.info('{MARKER_PREFIX}' + marker)\n"
        "    time.sleep(float(engine.params.get('sleep') or 0))\n"
        "    engine.result.set({'execution': marker})\n"
    ),
    "javascript": (
        "async function Run(engine) {\n"
        "  const marker = crypto.randomUUID().replace(/-/g, '');\n"
        f"  engine.log.info('{MARKER_PREFIX}' + marker);\n"
        "  const seconds = parseFloat(engine.params.get('sleep') || '0');\n"
        "  await new Promise((done) => setTimeout(done, seconds * 1000));\n"
        "  engine.result.set({ execution: marker });\n"
        "}\n"
        "module.exports = { Run };\n"
    ),
    "go": (
        "package main\n\n"
        "import (\n\t\"codeactions\"\n\t\"crypto/rand\"\n\t\"encoding/hex\"\n"
        "\t\"strconv\"\n\t\"time\"\n)\n\n"
        "func Run(engine *codeactions.Engine) error {\n"
        "\tbuf := make([]byte, 16)\n"
        "\t_, _ = rand.Read(buf)\n"
        "\tmarker := hex.EncodeToString(buf)\n"
        f"\tengine.Log.Info(\"{MARKER_PREFIX}\" + marker)\n"
        "\tseconds, _ := strconv.ParseFloat(engine.Params.Get(\"sleep\"), 64)\n"
        "\ttime.Sleep(time.Duration(seconds * float64(time.Second)))\n"
        "\treturn engine.Result.Set(map[string]any{\"execution\": marker})\n"
        "}\n"
    ),
}


def create_codes(api_url: str, scenario: str, languages: list[str]) -> dict[str, str]:
    """One endpoint code per language for a scenario: language -> code id."""
    codes = {}
    for language in languages:
        response = requests.post(f"{api_url}/code", params={
            "name": f"chaos-{scenario}-{language}", "language": language, "type": "endpoint",
            "project_uuid": PROJECT, "timeout": str(TIMEOUT),
        }, data=SOURCES[language].encode(), timeout=60)
        response.raise_for_status()
        codes[language] = response.json()["id"]
    return codes


def serves(api_url: str, code_id: str) -> tuple[bool, str]:
    """One sync call of a chaos code: (answered 200, what it answered)."""
    try:
        response = requests.post(f"{api_url}/action/endpoint/{code_id}",
                                 params={"kind": "probe", "sleep": "0"}, timeout=60)
    except requests.RequestException as exc:
        return False, type(exc).__name__
    return response.status_code == 200, f"{response.status_code} {response.text[:200]}"


def warm_up(api_url: str, codes: dict[str, str], seconds: float = 120) -> dict[str, str]:
    """Until each code answers a sync call 200 (a Go code is compiled on its first run), up
    to `seconds`: the languages that did not, with their last answer."""
    import time

    deadline = time.monotonic() + seconds
    failing = dict.fromkeys(codes, "")
    while failing and time.monotonic() < deadline:
        for language in list(failing):
            ok, answer = serves(api_url, codes[language])
            if ok:
                del failing[language]
            else:
                failing[language] = answer
        if failing:
            time.sleep(1)
    return failing
