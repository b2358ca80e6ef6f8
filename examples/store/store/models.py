from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


class Named(SQLModel):
    name: str = Field(index=True)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Customer(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str | None = None


class Address(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id")


class Category(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)


class Product(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    category_id: int | None = Field(default=None, foreign_key="category.id")
    price_cents: int = 0


class Order(Named, table=True):
    __tablename__ = "orders"
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id")


class OrderLine(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    order_id: int | None = Field(default=None, foreign_key="orders.id")
    product_id: int | None = Field(default=None, foreign_key="product.id")
    quantity: int = 1


class Review(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    product_id: int | None = Field(default=None, foreign_key="product.id")
    stars: int = 5


class Coupon(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    percent_off: int = 10


class Warehouse(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)


class Stock(Named, table=True):
    id: int | None = Field(default=None, primary_key=True)
    warehouse_id: int | None = Field(default=None, foreign_key="warehouse.id")
    product_id: int | None = Field(default=None, foreign_key="product.id")


TABLES: dict[str, type[Named]] = {
    model.__tablename__: model  # type: ignore[misc]
    for model in (
        Customer,
        Address,
        Category,
        Product,
        Order,
        OrderLine,
        Review,
        Coupon,
        Warehouse,
        Stock,
    )
}
