from django.urls import path

from . import views

app_name = "explorer"

urlpatterns = [
    path("", views.capture_list, name="capture_list"),
    path("captures/<int:capture_id>/", views.capture, name="capture"),
]
