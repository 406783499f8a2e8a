"""Engines that run the model behind ``assistant.engines.generation.Generator``: transformers and
llama.cpp in-process, and any OpenAI-compatible server. ``assistant.engines.registry``
names them; the ``engine`` setting picks one. Beside them, the engine contract's types
(``generation``, ``messages``, ``chat_template``), the base model's files and loading
(``model_files``, ``models``) and GGUF conversion (``conversion``).

May import: the top-level helpers (config, errors, cpu, atomic, versions); no other part of
the library: engines take messages, not the chat's prompt building.
"""
