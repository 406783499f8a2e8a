"""The document pipeline: a file parsed (in a child process with limits), cut into chunks,
embedded, stored and indexed (``ingest``), and found again for a question (``retrieval``:
FAISS + lexical search, fused).

May import: ``assistant.storage``, ``assistant.config``, ``assistant.errors`` and the
shared helpers at the top of ``assistant`` (atomic, words, processes). Never the chat, the
engines or login: the chat asks retrieval, not the other way round.
"""
