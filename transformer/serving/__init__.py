"""What only the HTTP server needs: `app.py` (FastAPI), `page.py` (the web page) and `batcher.py`
(concurrent requests gathered into one batched search). Nothing in the core package imports from
here; `serve.py` at the repository root is its command line.
"""
