"""The chat: ``service.ChatService`` (validate, fit the history, store, stream, store),
the prompt it builds (``prompting``), how grounded answers are formed and cited
(``answer_modes``, ``citations``, ``evidence``) and compare mode (``side_by_side``).

May import: the engines' contract (``assistant.engines.generation``, ``.messages``),
``assistant.documents.retrieval``, ``assistant.storage`` and the top-level helpers. The
engines never import the chat (``tests/test_layers.py``).
"""
