"""The references of the course's exercises, one module per lesson (``lesson_02.py``, …).

Each module registers its exercises with `dalle_mini_core.exercises` when imported;
`dalle_mini_core.exercises.get_exercise("02.posterior_variance")` imports the right module on first
use. Nothing here is shown in a notebook: the check cells name the exercise, not its answer.
"""
