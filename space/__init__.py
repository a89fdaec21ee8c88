"""The shared word–image space: tokeniser, safe image loading, query embedding and the model bundle.

Everything here runs without torch or gensim, so the engine and the bot can depend on it.
"""
