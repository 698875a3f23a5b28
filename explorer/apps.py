from django.apps import AppConfig


class ExplorerConfig(AppConfig):
    name = "explorer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks

        checks.check_middleware_by_its_django_names()
