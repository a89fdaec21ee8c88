"""The text side: Word2Vec and TF-IDF over the kept captions (:mod:`.word2vec`)."""
