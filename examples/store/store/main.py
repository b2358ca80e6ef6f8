from backend.main import create_app
from store import routes

app = create_app(routers=[routes.router], wire=[routes])
