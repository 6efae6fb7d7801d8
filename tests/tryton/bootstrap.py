"""Prepares a freshly initialised Tryton database for the erpsync integration test.

Runs inside trytond (no server): creates the euro, the company the sales belong to, the web
shop that makes `web_id` unique, gives the admin user the company and prints a validated REST
key. Arguments: the trytond config file and the database name.
"""
import sys
from decimal import Decimal

from trytond import config

config.update_etc(sys.argv[1])

from trytond.pool import Pool  # noqa: E402  (config must be loaded first)
from trytond.transaction import Transaction  # noqa: E402

database = sys.argv[2]
Pool.start()
pool = Pool(database)
with Transaction().start(database, 0, readonly=True):
    pool.init()

with Transaction().start(database, 0, context={'active_test': False}) as transaction:
    Currency = pool.get('currency.currency')
    Party = pool.get('party.party')
    Company = pool.get('company.company')
    User = pool.get('res.user')
    Application = pool.get('res.user.application')
    Location = pool.get('stock.location')
    WebShop = pool.get('web.shop')

    euro, = Currency.create([{
        'name': 'Euro', 'code': 'EUR', 'symbol': '€',
        'rounding': Decimal('0.01'), 'digits': 2}])
    owner, = Party.create([{'name': 'Demo Shop Ltd'}])
    company, = Company.create([{'party': owner.id, 'currency': euro.id}])
    admin, = User.search([('login', '=', 'admin')])
    User.write([admin], {'companies': [('add', [company.id])], 'company': company.id})
    warehouse, = Location.search([('type', '=', 'warehouse')], limit=1)
    with Transaction().set_context(company=company.id):
        WebShop.create([{
            'name': 'Web', 'company': company.id, 'currency': euro.id,
            'warehouses': [('add', [warehouse.id])]}])
    # Created through the ORM, the key is validated at once (over HTTP it would wait for an admin).
    application, = Application.create([{'user': admin.id, 'application': 'rest'}])
    transaction.commit()
    print(application.key)
