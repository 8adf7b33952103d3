"""A starter catalogue so a fresh `make run` has something to sell."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from orderflow.db import Product

# sku: (name, price in paise (INR minor units), units on hand); the laptop is above the ₹50,000 review threshold
STARTER = {
    "TSHIRT-M": ("Cotton T-shirt (M)", 79_900, 500),
    "MUG-01": ("Ceramic mug", 29_900, 500),
    "HEADPHONES": ("Wireless headphones", 249_900, 200),
    "LAPTOP-PRO": ("Laptop Pro 14", 6_499_900, 50),
}


def seed(engine: Engine) -> int:
    """Add the starter products that are missing; returns how many were added."""
    added = 0
    with Session(engine) as session:
        have = set(session.exec(select(Product.sku)).all())
        for sku, (name, price, units) in STARTER.items():
            if sku not in have:
                session.add(Product(sku=sku, name=name, price=price, on_hand=units))
                added += 1
        session.commit()
    return added
