"""Engines that run the model behind ``assistant.generation.Generator``: transformers and
llama.cpp in-process, and any OpenAI-compatible server. ``assistant.engines.registry``
names them; the ``engine`` setting picks one."""
