"""Problems and data: loaders of every problem set, code problems, the arithmetic task, the row schema, prompts."""
