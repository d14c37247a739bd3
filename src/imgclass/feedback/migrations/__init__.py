"""Alembic migrations of the feedback database, run from code by ``imgclass.feedback.db``
(no alembic.ini): ``FeedbackStore`` upgrades to head when it opens a database, and
``imgclass feedback migrate`` does it on demand."""
