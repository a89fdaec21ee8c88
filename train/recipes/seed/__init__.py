"""The seed recipe: the original system's GoogLeNet regression onto fixed Word2Vec caption vectors."""
