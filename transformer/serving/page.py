"""The web page served at `/`: plain HTML and a little JavaScript, no build step.

It posts the text box's lines to `/translate` (the same JSON API as every other client) and shows
the translations and how long the round trip took. The server fills in the model's name, its
languages and the beam limits; a multilingual model gets a target-language selector, whose choice
is sent as the request's "tgt_lang".
"""

from __future__ import annotations

from html import escape
from string import Template

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Translate $languages</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
         color: #1d1d1f; }
  h1 { font-size: 1.5rem; margin-bottom: 0.25rem; }
  .model { color: #555; margin-top: 0; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .pair label { font-weight: 600; display: flex; flex-direction: column; gap: 0.4rem; }
  textarea, #result { font: inherit; font-weight: normal; min-height: 10rem; padding: 0.6rem;
                      border: 1px solid #bbb; border-radius: 6px; box-sizing: border-box; }
  #result { background: #f5f5f7; white-space: pre-wrap; }
  .controls { margin-top: 1rem; display: flex; gap: 1rem; align-items: center; }
  button { font: inherit; padding: 0.45rem 1.4rem; border: 0; border-radius: 6px;
           background: #0a66c2; color: white; cursor: pointer; }
  button:disabled { background: #8aa9c9; }
  #status { color: #555; }
  #status.error { color: #b00020; }
</style>
</head>
<body>
<h1>Translate $languages</h1>
<p class="model">Model <code>$name</code> · one sentence per line ·
  <a href="docs">API</a></p>
<form id="form">
  <div class="pair">
    <label for="source">$source
      <textarea id="source" name="text" placeholder="Type or paste text here"></textarea>
    </label>
    <label>$target_label
      <output id="result" for="source" aria-live="polite"></output>
    </label>
  </div>
  <div class="controls">
    <button id="translate" type="submit">Translate</button>
    $language_selector
    <label>Beam <input id="beam" type="number" min="1" max="$max_beam" value="$beam"></label>
    <span id="status"></span>
  </div>
</form>
<script>
const form = document.getElementById("form");
const source = document.getElementById("source");
const result = document.getElementById("result");
const beam = document.getElementById("beam");
const statusLine = document.getElementById("status");
const button = document.getElementById("translate");
const targetLanguage = document.getElementById("tgt_lang");  // only for multilingual models

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const lines = source.value.split("\\n");
  button.disabled = true;
  statusLine.className = "";
  statusLine.textContent = "Translating…";
  const started = performance.now();
  try {
    const request = {text: lines, beam: Number(beam.value)};
    if (targetLanguage) request.tgt_lang = targetLanguage.value;
    const response = await fetch("translate", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(request),
    });
    const body = await response.json();
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    if (!response.ok) {
      statusLine.className = "error";
      statusLine.textContent = `Error $${response.status}: $${body.error}`;
      return;
    }
    result.textContent = body.translations.join("\\n");
    statusLine.textContent = `$${lines.length} line(s) in $${seconds} s`;
  } catch (error) {
    statusLine.className = "error";
    statusLine.textContent = `Error: $${error}`;
  } finally {
    button.disabled = false;
  }
});
</script>
</body>
</html>
""")


def render_page(
    name: str,
    languages: str,
    source: str,
    targets: list[str],
    beam: int,
    max_beam: int,
    choose_language: bool = False,
) -> str:
    """The page with the model's details filled in (escaped: a run name is not trusted HTML).
    `languages` says which directions the model knows ("en -> de"), `source` labels the text box,
    `targets`: the languages the model translates into; choose_language (a multilingual model)
    adds the selector that picks one of them for each request."""
    selector = ""
    if choose_language:
        options = "".join(
            f'<option value="{escape(language)}">{escape(language)}</option>'
            for language in targets
        )
        selector = f'<label>Into <select id="tgt_lang">{options}</select></label>'
    return _PAGE.substitute(
        name=escape(name),
        languages=escape(languages.replace("->", "→")),
        source=escape(source),
        target_label="Translation" if choose_language else escape(targets[0]),
        language_selector=selector,
        beam=beam,
        max_beam=max_beam,
    )
