"""The name of the base model as a version: what the chat answers with when no adapter is
active, and the parent of a version trained from scratch. Torch-free, so that the UI, the
registry and the doctor can use it without loading the model code."""

BASE_VERSION = "base"

#: The kind of a reward model's version: it scores answers and never chats. Every other kind
#: is a chat version (the kinds of training: alignment.training_kinds).
REWARD_KIND = "reward"
