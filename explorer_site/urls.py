from django.urls import include, path

from explorer.api import api

urlpatterns = [
    path("api/", api.urls),
    path("", include("explorer.urls")),
]
