"""Learning from users: the feedback store (SQLAlchemy, Alembic migrations), its export
to a prepared dataset, retraining and champion/challenger promotion."""
