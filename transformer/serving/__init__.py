"""What only the HTTP server needs: `app.py` (the FastAPI app: routes, checks, error answers),
`page.py` (the web page), `batcher.py` (concurrent requests gathered into one batched search) and
`body_limit.py` (an oversized body refused before it is read). Nothing in the core imports from
here; `serve.py` at the repository root is its command line.
"""
