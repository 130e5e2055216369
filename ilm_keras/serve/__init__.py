"""A web server over a trained ILM preset: a JSON API and one chat page.

`ilm_keras.serve.app.create_app(chat_model)` is the ASGI app (Starlette);
`ilm-serve PRESET` / `python -m ilm_keras.serve PRESET` runs it under
uvicorn. Needs the `serve` extra: `pip install -e ".[serve]"`.
"""
