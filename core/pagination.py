"""The management API's default pagination, with bounds PostgreSQL can take."""

from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` is capped at ``max_limit`` and ``?offset=`` at a value far past any
    table, so no query string can push a number past PostgreSQL's bigint (a 500)."""

    max_limit = 500
    max_offset = 2**31 - 1

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)
