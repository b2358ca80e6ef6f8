from sqlmodel import Field, SQLModel


class HeroIn(SQLModel):
    name: str
    secret_name: str
    age: int | None = None


class Hero(HeroIn, table=True):
    id: int | None = Field(default=None, primary_key=True)
