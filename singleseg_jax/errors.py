"""The one exception type for bad user input.

Entry points catch `InputError` and print its message as a single line; the library
raises it (never a bare assert) wherever a caller could pass something unusable.
"""


class InputError(ValueError):
  """A user-facing problem with an input (image, outline, config value)."""
