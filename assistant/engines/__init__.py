"""Engines that run the model behind ``assistant.generation.Generator``: transformers and
llama.cpp in-process, and any OpenAI-compatible server. ``bootstrap.ENGINES`` picks one."""
