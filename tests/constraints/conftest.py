from tests.utils.fixtures import *  # noqa: F401,F403
