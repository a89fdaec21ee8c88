"""How images reach the word space: the joint recipe (the default) and the seed recipe (the original's).

Each recipe's ``build(side)`` takes the text side and returns what the bundle needs of the image side.
"""
