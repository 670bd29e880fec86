"""Server secrets for tests: fixed (the tests are reproducible) and strong enough for
:mod:`churn.secret_strength`, which refuses short or regular values at settings load."""

from __future__ import annotations

#: The server secret of the services and key stores under test.
TEST_SECRET = "sMh0qV7d97HAO56hknibTi6qlejJmBk0gG2Cy29llss"
#: Another valid secret: keys made under it must not work under :data:`TEST_SECRET`.
OTHER_SECRET = "U0iXQ5vTkCa5BRs0euxiqjHN1SR-oKDH7PSYfU_HFbQ"
#: A third, for tests that need one more (e.g. a fixed secret for reproducible outputs).
THIRD_SECRET = "A28JcNOHkEO3BYAqNOast8b_hj3KUIpXWrpQqEvCKLk"
