"""Conversational recommendation for people over a trained ILM preset.

`ilm_keras.chat.conversation` holds the logic (no I/O): `Catalogue`,
`ChatModel`, `Conversation`, `Reply`. `python -m ilm_keras.chat PRESET` (the
`ilm-chat` console script) is the terminal front end; `ilm_keras.serve`
the web one.
"""
